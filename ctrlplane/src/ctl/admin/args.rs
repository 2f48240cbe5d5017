//! rvsadm's command line, parsed the way ipvsadm parses its own.
//!
//! A hand parser rather than clap: ipvsadm's syntax is a letter *command* that must come first
//! (`-A`, `-a`, `-L`, ...) followed by options whose legality depends on that command (its
//! `commands_v_options` table, reproduced in [`rule`]), short options that cluster (`-Ln`,
//! `-At 10.0.0.1:80`), an option with an *optional* argument (`-p [timeout]`), a letter whose
//! meaning depends on the command (`-b`: scheduler flags with `-A`/`-E`, FULLNAT forwarding with
//! `-a`/`-e`, as DPVS's ipvsadm), and bare positional values (`--set tcp tcpfin udp`). clap can
//! express none of the first four without fighting it, and its error texts are not ipvsadm's.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use crate::config::Scheduler;
use crate::ctl::proto::{Fwd, Proto, RealSpec, ServiceKey, ServiceSpec, TimeoutsView};

/// ipvsadm's default scheduler (`-s` absent with `-A`/`-E`). rvsd validates the name.
pub const DEFAULT_SCHEDULER: &str = "wlc";
/// ipvsadm's default persistence timeout (`-p` without a value), in seconds.
pub const DEFAULT_PERSISTENT: u32 = 300;
/// ipvsadm's largest timeout (31 days), in seconds.
pub const MAX_TIMEOUT: u32 = 86400 * 31;

/// What `-L` shows and how.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Only this service (`-L -t VIP:port`).
    pub service: Option<ServiceKey>,
    /// `-n` (accepted; rvsadm always prints numeric addresses and ports).
    pub numeric: bool,
    /// `-c`: connection entries.
    pub connections: bool,
    /// `--timeout`: the session timeouts.
    pub timeout: bool,
    /// `--stats`.
    pub stats: bool,
    /// `--rate`.
    pub rate: bool,
    /// `--thresholds`.
    pub thresholds: bool,
    /// `--persistent-conn`.
    pub persistent_conn: bool,
    /// `--exact`: numbers without K/M/G/T rounding.
    pub exact: bool,
    /// `--nosort`: keep rvsd's order (sorting is the default; `--sort` is accepted).
    pub nosort: bool,
    /// `--health` (rvs's own): a `Health` column after `InActConn`.
    pub health: bool,
    /// `--daemon`: the connection sync daemons (none: rvs has no session sync yet, so nothing
    /// is printed, as ipvsadm prints nothing when none runs).
    pub daemon: bool,
}

/// One rvsadm command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `-A`.
    AddService(ServiceSpec),
    /// `-E`.
    EditService(ServiceSpec),
    /// `-D`.
    DelService(ServiceKey),
    /// `-C`.
    Clear,
    /// `-R`: commands from stdin.
    Restore,
    /// `-S [-n]`.
    Save {
        /// `-n` given (always numeric anyway).
        numeric: bool,
    },
    /// `-a`.
    AddReal {
        /// The service.
        key: ServiceKey,
        /// The real server.
        real: RealSpec,
    },
    /// `-e`.
    EditReal {
        /// The service.
        key: ServiceKey,
        /// The real server.
        real: RealSpec,
        /// No forwarding option given: the real server keeps its method.
        keep_fwd: bool,
    },
    /// `-d`.
    DelReal {
        /// The service.
        key: ServiceKey,
        /// The real server's address and port.
        addr: SocketAddr,
    },
    /// `-L` / `-l` (also rvsadm without arguments).
    List(ListOptions),
    /// `-Z [service]`.
    Zero(Option<ServiceKey>),
    /// `--set tcp tcpfin udp` (0 leaves a value unchanged, as with IPVS).
    SetTimeouts(TimeoutsView),
    /// `--add-laddr -z LIP -t|-u service`.
    AddLaddr {
        /// The service.
        key: ServiceKey,
        /// The local address.
        lip: IpAddr,
    },
    /// `--del-laddr -z LIP -t|-u service`.
    DelLaddr {
        /// The service.
        key: ServiceKey,
        /// The local address.
        lip: IpAddr,
    },
    /// `--get-laddr [service]`.
    GetLaddr(Option<ServiceKey>),
    /// `--reload`.
    Reload,
    /// `--validate [FILE]`.
    Validate(Option<String>),
    /// `--status`.
    Status,
    /// `-h` / `--help`.
    Help,
    /// `-v` / `--version`.
    Version,
}

impl Command {
    /// Whether `-R` may replay this command (the ones `-S` prints, and the other changes).
    pub fn restorable(&self) -> bool {
        matches!(
            self,
            Command::AddService(_)
                | Command::EditService(_)
                | Command::DelService(_)
                | Command::Clear
                | Command::AddReal { .. }
                | Command::EditReal { .. }
                | Command::DelReal { .. }
                | Command::Zero(_)
                | Command::SetTimeouts(_)
                | Command::AddLaddr { .. }
                | Command::DelLaddr { .. }
        )
    }
}

/// A parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    /// The command.
    pub command: Command,
    /// `--socket PATH`, when given.
    pub socket: Option<PathBuf>,
}

/// A command-line error. Displays as the bare message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageError {
    /// ipvsadm's wording where it has one.
    pub message: String,
    /// Whether to add the "Try `rvsadm -h'" hint.
    pub hint: bool,
    /// Found by ipvsadm's option parser (popt: an unknown option, a missing argument, no
    /// command first), where ipvsadm exits 255; its other command-line errors exit 2.
    pub popt: bool,
}

impl UsageError {
    /// The exit status ipvsadm gives this error.
    pub fn exit_code(&self) -> i32 {
        if self.popt {
            255
        } else {
            2
        }
    }
}

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn fail<T>(message: impl Into<String>) -> Result<T, UsageError> {
    Err(UsageError {
        message: message.into(),
        hint: false,
        popt: false,
    })
}

/// No command first: the hint, exit 255 (ipvsadm's `tryhelp_exit(program, -1)`).
fn fail_hint<T>(message: impl Into<String>) -> Result<T, UsageError> {
    Err(UsageError {
        message: message.into(),
        hint: true,
        popt: true,
    })
}

/// popt's error, worded as ipvsadm prints it (`OPTION: reason`), exit 255.
fn fail_popt<T>(option: &str, reason: &str) -> Result<T, UsageError> {
    Err(UsageError {
        message: format!("{option}: {reason}"),
        hint: false,
        popt: true,
    })
}

/// The commands, with ipvsadm's names (`cmdnames`) for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    Add,
    Edit,
    Del,
    Flush,
    List,
    AddDest,
    DelDest,
    EditDest,
    Set,
    Restore,
    Save,
    Zero,
    AddLaddr,
    DelLaddr,
    GetLaddr,
    Reload,
    Validate,
    Status,
    Help,
    Version,
}

impl Cmd {
    fn name(self) -> &'static str {
        match self {
            Cmd::Add => "add-service",
            Cmd::Edit => "edit-service",
            Cmd::Del => "delete-service",
            Cmd::Flush => "flush",
            Cmd::List => "list",
            Cmd::AddDest => "add-server",
            Cmd::DelDest => "delete-server",
            Cmd::EditDest => "edit-server",
            Cmd::Set => "set",
            Cmd::Restore => "restore",
            Cmd::Save => "save",
            Cmd::Zero => "zero",
            Cmd::AddLaddr => "add-laddr",
            Cmd::DelLaddr => "del-laddr",
            Cmd::GetLaddr => "get-laddr",
            Cmd::Reload => "reload",
            Cmd::Validate => "validate",
            Cmd::Status => "status",
            Cmd::Help => "help",
            Cmd::Version => "version",
        }
    }
}

/// The options, with ipvsadm's names (`optnames`) for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opt {
    Numeric,
    Connection,
    Service,
    Scheduler,
    Persistent,
    Netmask,
    Server,
    Forward,
    Weight,
    UThreshold,
    LThreshold,
    Timeout,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    NoSort,
    Exact,
    SchedFlags,
    Laddr,
    Health,
    Daemon,
}

const ALL_OPTS: [Opt; 22] = [
    Opt::Numeric,
    Opt::Connection,
    Opt::Service,
    Opt::Scheduler,
    Opt::Persistent,
    Opt::Netmask,
    Opt::Server,
    Opt::Forward,
    Opt::Weight,
    Opt::UThreshold,
    Opt::LThreshold,
    Opt::Timeout,
    Opt::Stats,
    Opt::Rate,
    Opt::Thresholds,
    Opt::PersistentConn,
    Opt::NoSort,
    Opt::Exact,
    Opt::SchedFlags,
    Opt::Laddr,
    Opt::Health,
    Opt::Daemon,
];

impl Opt {
    fn name(self) -> &'static str {
        match self {
            Opt::Numeric => "numeric",
            Opt::Connection => "connection",
            Opt::Service => "service-address",
            Opt::Scheduler => "scheduler",
            Opt::Persistent => "persistent",
            Opt::Netmask => "netmask",
            Opt::Server => "real-server",
            Opt::Forward => "forwarding-method",
            Opt::Weight => "weight",
            Opt::UThreshold => "u-threshold",
            Opt::LThreshold => "l-threshold",
            Opt::Timeout => "timeout",
            Opt::Stats => "stats",
            Opt::Rate => "rate",
            Opt::Thresholds => "thresholds",
            Opt::PersistentConn => "persistent-conn",
            Opt::NoSort => "nosort",
            Opt::Exact => "exact",
            Opt::SchedFlags => "sched-flags",
            Opt::Laddr => "laddr",
            Opt::Health => "health",
            Opt::Daemon => "daemon",
        }
    }
    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// ipvsadm's `commands_v_options`: `+` compulsory, `x` illegal, `1` exclusive (one at most),
/// ` ` optional; with rows for rvsadm's own commands and columns for `-b` flags and `-z`.
fn rule(cmd: Cmd, opt: Opt) -> char {
    use Opt::*;
    match cmd {
        Cmd::Add | Cmd::Edit => match opt {
            Service => '+',
            Scheduler | Persistent | Netmask | SchedFlags => ' ',
            _ => 'x',
        },
        Cmd::Del => match opt {
            Service => '+',
            _ => 'x',
        },
        Cmd::List => match opt {
            Numeric | Stats | Rate | Thresholds | PersistentConn | NoSort | Exact | Health => ' ',
            Connection | Service | Timeout | Daemon => '1',
            _ => 'x',
        },
        Cmd::AddDest | Cmd::EditDest => match opt {
            Service | Server => '+',
            Forward | Weight | UThreshold | LThreshold => ' ',
            _ => 'x',
        },
        Cmd::DelDest => match opt {
            Service | Server => '+',
            _ => 'x',
        },
        Cmd::Save => match opt {
            Numeric => ' ',
            _ => 'x',
        },
        Cmd::Zero => match opt {
            Service => ' ',
            _ => 'x',
        },
        Cmd::AddLaddr | Cmd::DelLaddr => match opt {
            Service | Laddr => '+',
            _ => 'x',
        },
        Cmd::GetLaddr => match opt {
            Service | Numeric => ' ',
            _ => 'x',
        },
        Cmd::Flush
        | Cmd::Set
        | Cmd::Restore
        | Cmd::Reload
        | Cmd::Validate
        | Cmd::Status
        | Cmd::Help
        | Cmd::Version => 'x',
    }
}

/// Whether an option takes an argument.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Arg {
    No,
    Required,
    Optional,
}

/// What one option letter or name does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Item {
    Command(Cmd),
    Tcp,
    Udp,
    Fwmark,
    Ipv6,
    Scheduler,
    Persistent,
    Netmask,
    SchedFlags,
    Real,
    Gate,
    Ipip,
    Masq,
    FullNat,
    Weight,
    UThreshold,
    LThreshold,
    Numeric,
    Connection,
    Timeout,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    Sort,
    NoSort,
    Exact,
    Laddr,
    Socket,
    Health,
    Daemon,
}

impl Item {
    fn arg(self) -> Arg {
        match self {
            Item::Tcp
            | Item::Udp
            | Item::Fwmark
            | Item::Scheduler
            | Item::Netmask
            | Item::SchedFlags
            | Item::Real
            | Item::Weight
            | Item::UThreshold
            | Item::LThreshold
            | Item::Laddr
            | Item::Socket => Arg::Required,
            Item::Persistent | Item::Command(Cmd::Validate) => Arg::Optional,
            _ => Arg::No,
        }
    }
}

/// A short option letter; `-b` depends on the command (`cmd`).
fn short(c: char, cmd: Option<Cmd>) -> Option<Item> {
    Some(match c {
        'A' => Item::Command(Cmd::Add),
        'E' => Item::Command(Cmd::Edit),
        'D' => Item::Command(Cmd::Del),
        'C' => Item::Command(Cmd::Flush),
        'R' => Item::Command(Cmd::Restore),
        'S' => Item::Command(Cmd::Save),
        'a' => Item::Command(Cmd::AddDest),
        'e' => Item::Command(Cmd::EditDest),
        'd' => Item::Command(Cmd::DelDest),
        'L' | 'l' => Item::Command(Cmd::List),
        'Z' => Item::Command(Cmd::Zero),
        'P' => Item::Command(Cmd::AddLaddr),
        'Q' => Item::Command(Cmd::DelLaddr),
        'G' => Item::Command(Cmd::GetLaddr),
        'h' => Item::Command(Cmd::Help),
        'v' => Item::Command(Cmd::Version),
        't' => Item::Tcp,
        'u' => Item::Udp,
        'f' => Item::Fwmark,
        '6' => Item::Ipv6,
        's' => Item::Scheduler,
        'p' => Item::Persistent,
        'M' => Item::Netmask,
        'r' => Item::Real,
        'g' => Item::Gate,
        'i' => Item::Ipip,
        'm' => Item::Masq,
        'b' if matches!(cmd, Some(Cmd::Add | Cmd::Edit)) => Item::SchedFlags,
        'b' => Item::FullNat,
        'w' => Item::Weight,
        'x' => Item::UThreshold,
        'y' => Item::LThreshold,
        'n' => Item::Numeric,
        'c' => Item::Connection,
        'X' => Item::Exact,
        'z' => Item::Laddr,
        _ => return None,
    })
}

fn long(name: &str) -> Option<Item> {
    Some(match name {
        "add-service" => Item::Command(Cmd::Add),
        "edit-service" => Item::Command(Cmd::Edit),
        "delete-service" => Item::Command(Cmd::Del),
        "clear" => Item::Command(Cmd::Flush),
        "restore" => Item::Command(Cmd::Restore),
        "save" => Item::Command(Cmd::Save),
        "add-server" => Item::Command(Cmd::AddDest),
        "edit-server" => Item::Command(Cmd::EditDest),
        "delete-server" => Item::Command(Cmd::DelDest),
        "list" => Item::Command(Cmd::List),
        "zero" => Item::Command(Cmd::Zero),
        "set" => Item::Command(Cmd::Set),
        "add-laddr" => Item::Command(Cmd::AddLaddr),
        "del-laddr" => Item::Command(Cmd::DelLaddr),
        "get-laddr" => Item::Command(Cmd::GetLaddr),
        "reload" => Item::Command(Cmd::Reload),
        "validate" => Item::Command(Cmd::Validate),
        "status" => Item::Command(Cmd::Status),
        "help" => Item::Command(Cmd::Help),
        "version" => Item::Command(Cmd::Version),
        "tcp-service" => Item::Tcp,
        "udp-service" => Item::Udp,
        "fwmark-service" => Item::Fwmark,
        "ipv6" => Item::Ipv6,
        "scheduler" => Item::Scheduler,
        "persistent" => Item::Persistent,
        "netmask" => Item::Netmask,
        "sched-flags" => Item::SchedFlags,
        "real-server" => Item::Real,
        "gatewaying" => Item::Gate,
        "ipip" => Item::Ipip,
        "masquerading" => Item::Masq,
        "fullnat" => Item::FullNat,
        "weight" => Item::Weight,
        "u-threshold" => Item::UThreshold,
        "l-threshold" => Item::LThreshold,
        "numeric" => Item::Numeric,
        "connection" => Item::Connection,
        "timeout" => Item::Timeout,
        "stats" => Item::Stats,
        "rate" => Item::Rate,
        "thresholds" => Item::Thresholds,
        "persistent-conn" => Item::PersistentConn,
        "sort" => Item::Sort,
        "nosort" => Item::NoSort,
        "exact" => Item::Exact,
        "laddr" => Item::Laddr,
        "health" => Item::Health,
        "daemon" => Item::Daemon,
        "socket" => Item::Socket,
        _ => return None,
    })
}

/// ipvsadm 1.31's long options rvs does not take (besides `--tun-*`): refused as such (exit 2),
/// not as unknown. The connection sync daemon comes with session sync; one-packet scheduling,
/// persistence engines and SCTP are not there.
const UNSUPPORTED_LONG: &[&str] = &[
    "start-daemon",
    "stop-daemon",
    "ops",
    "pe",
    "sctp-service",
    "mcast-interface",
    "syncid",
    "sync-maxlen",
    "mcast-group",
    "mcast-port",
    "mcast-ttl",
];

/// A service as named on the command line.
#[derive(Clone, Copy)]
enum Svc {
    Addr { proto: Proto, ip: IpAddr, port: u16 },
    Fwmark(u32),
}

/// Everything gathered while reading the options.
#[derive(Default)]
struct State {
    cmd: Option<Cmd>,
    opts: u32,
    svc: Option<Svc>,
    scheduler: Option<String>,
    persistent: Option<u32>,
    netmask: Option<String>,
    sched_flags: Vec<String>,
    real: Option<(IpAddr, Option<u16>)>,
    fwd: Option<Fwd>,
    weight: Option<u32>,
    upper: Option<u32>,
    lower: Option<u32>,
    laddr: Option<IpAddr>,
    socket: Option<PathBuf>,
    validate: Option<String>,
    list: ListOptions,
    positional: Vec<String>,
}

impl State {
    fn set(&mut self, opt: Opt) -> Result<(), UsageError> {
        if self.opts & opt.bit() != 0 {
            return fail(format!("multiple '{}' options specified", opt.name()));
        }
        self.opts |= opt.bit();
        Ok(())
    }
    fn has(&self, opt: Opt) -> bool {
        self.opts & opt.bit() != 0
    }
}

/// Parses an rvsadm command line (without the program name). An empty one lists the table, as
/// ipvsadm without arguments does.
pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Invocation, UsageError> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    if args.is_empty() {
        return Ok(Invocation {
            command: Command::List(ListOptions::default()),
            socket: None,
        });
    }
    let mut st = State::default();
    let mut i = 0;
    let mut only_positional = false;
    while i < args.len() {
        let arg = args[i];
        i += 1;
        if only_positional || arg == "-" || !arg.starts_with('-') {
            if st.cmd.is_none() {
                return fail_hint(format!("a command must come first, got `{arg}'"));
            }
            st.positional.push(arg.to_owned());
            continue;
        }
        if arg == "--" {
            only_positional = true;
            continue;
        }
        if let Some(body) = arg.strip_prefix("--") {
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(item) = long(name) else {
                if UNSUPPORTED_LONG.contains(&name) || name.starts_with("tun-") {
                    return fail(format!("--{name}: ipvsadm's, not supported by rvs"));
                }
                return fail_popt(&format!("--{name}"), "unknown option");
            };
            let value = match (item.arg(), inline) {
                (Arg::No, Some(_)) => {
                    return fail_popt(&format!("--{name}"), "option does not take an argument")
                }
                (Arg::No, None) => None,
                (_, Some(v)) => Some(v.to_owned()),
                (Arg::Required, None) => match args.get(i) {
                    Some(v) => {
                        i += 1;
                        Some((*v).to_owned())
                    }
                    None => return fail_popt(&format!("--{name}"), "missing argument"),
                },
                (Arg::Optional, None) => match args.get(i) {
                    Some(v) if !v.starts_with('-') => {
                        i += 1;
                        Some((*v).to_owned())
                    }
                    _ => None,
                },
            };
            apply(&mut st, item, value, &format!("--{name}"))?;
            continue;
        }
        // A cluster of short options: -Ln, -At10.0.0.1:80, -p300.
        let chars: Vec<char> = arg.chars().skip(1).collect();
        let mut k = 0;
        while k < chars.len() {
            let c = chars[k];
            k += 1;
            let Some(item) = short(c, st.cmd) else {
                if c == 'o' {
                    return fail("-o: ipvsadm's, not supported by rvs");
                }
                return fail_popt(&format!("-{c}"), "unknown option");
            };
            let rest: String = chars[k..].iter().collect();
            let value = match item.arg() {
                Arg::No => None,
                Arg::Required | Arg::Optional if !rest.is_empty() => {
                    k = chars.len();
                    Some(rest)
                }
                Arg::Required => match args.get(i) {
                    Some(v) => {
                        i += 1;
                        Some((*v).to_owned())
                    }
                    None => return fail_popt(&format!("-{c}"), "missing argument"),
                },
                Arg::Optional => match args.get(i) {
                    Some(v) if !v.starts_with('-') => {
                        i += 1;
                        Some((*v).to_owned())
                    }
                    _ => None,
                },
            };
            apply(&mut st, item, value, &format!("-{c}"))?;
        }
    }
    finish(st)
}

fn apply(
    st: &mut State,
    item: Item,
    value: Option<String>,
    spelled: &str,
) -> Result<(), UsageError> {
    let v = value.unwrap_or_default();
    if let Item::Command(cmd) = item {
        if st.cmd.is_some() {
            return fail("multiple commands specified");
        }
        st.cmd = Some(cmd);
        if cmd == Cmd::Validate && !v.is_empty() {
            st.validate = Some(v);
        }
        return Ok(());
    }
    if item == Item::Socket {
        if st.socket.is_some() {
            return fail("multiple 'socket' options specified");
        }
        if v.is_empty() {
            return fail("--socket needs a path");
        }
        st.socket = Some(PathBuf::from(v));
        return Ok(());
    }
    if st.cmd.is_none() {
        return fail_hint(format!("a command must come first, got `{spelled}'"));
    }
    match item {
        Item::Command(_) | Item::Socket => {}
        Item::Tcp | Item::Udp => {
            st.set(Opt::Service)?;
            let proto = if item == Item::Tcp {
                Proto::Tcp
            } else {
                Proto::Udp
            };
            let Some((ip, port)) = parse_addr_port(&v) else {
                return fail("illegal virtual server address[:port] specified");
            };
            st.svc = Some(Svc::Addr {
                proto,
                ip,
                port: port.unwrap_or(0),
            });
        }
        Item::Fwmark => {
            st.set(Opt::Service)?;
            match v.parse::<u64>() {
                Ok(m) if m > 0 && m <= u64::from(u32::MAX) => st.svc = Some(Svc::Fwmark(m as u32)),
                _ => return fail(format!("invalid fwmark value `{v}' specified")),
            }
        }
        Item::Ipv6 => {
            if !matches!(st.svc, Some(Svc::Fwmark(_))) {
                return fail("-6 used before -f");
            }
            // Said, not ignored: an IPv6 fwmark service would otherwise be made an IPv4 one.
            return fail("-6: IPv6 fwmark services are not supported by rvs yet");
        }
        Item::Scheduler => {
            st.set(Opt::Scheduler)?;
            if v.is_empty() {
                return fail("illegal scheduler specified");
            }
            st.scheduler = Some(v);
        }
        Item::Persistent => {
            st.set(Opt::Persistent)?;
            st.persistent = Some(if v.is_empty() {
                DEFAULT_PERSISTENT
            } else {
                parse_timeout(&v, 1)?
            });
        }
        Item::Netmask => {
            st.set(Opt::Netmask)?;
            st.netmask = Some(v);
        }
        Item::SchedFlags => {
            st.set(Opt::SchedFlags)?;
            for flag in v.split(',') {
                if flag.is_empty() {
                    return fail(format!("invalid scheduler flags `{v}' specified"));
                }
                st.sched_flags.push(flag.to_owned());
            }
        }
        Item::Real => {
            st.set(Opt::Server)?;
            match parse_addr_port(&v) {
                Some(r) => st.real = Some(r),
                None => return fail("illegal real server address[:port] specified"),
            }
        }
        Item::Gate | Item::Ipip | Item::Masq | Item::FullNat => {
            st.set(Opt::Forward)?;
            st.fwd = Some(match item {
                Item::Gate => Fwd::Dr,
                Item::Ipip => Fwd::Tun,
                Item::Masq => Fwd::Nat,
                _ => Fwd::FullNat,
            });
        }
        Item::Weight => {
            st.set(Opt::Weight)?;
            st.weight = Some(number(&v, 65535).ok_or_else(|| usage("illegal weight specified"))?);
        }
        Item::UThreshold => {
            st.set(Opt::UThreshold)?;
            let n = number(&v, i32::MAX as u32)
                .ok_or_else(|| usage("illegal u_threshold specified"))?;
            st.upper = Some(n);
        }
        Item::LThreshold => {
            st.set(Opt::LThreshold)?;
            let n = number(&v, i32::MAX as u32)
                .ok_or_else(|| usage("illegal l_threshold specified"))?;
            st.lower = Some(n);
        }
        Item::Laddr => {
            st.set(Opt::Laddr)?;
            match v.parse::<IpAddr>() {
                Ok(ip) => st.laddr = Some(ip),
                Err(_) => return fail(format!("illegal local address `{v}' specified")),
            }
        }
        Item::Numeric => {
            st.set(Opt::Numeric)?;
            st.list.numeric = true;
        }
        Item::Connection => {
            st.set(Opt::Connection)?;
            st.list.connections = true;
        }
        Item::Timeout => {
            st.set(Opt::Timeout)?;
            st.list.timeout = true;
        }
        Item::Stats => {
            st.set(Opt::Stats)?;
            st.list.stats = true;
        }
        Item::Rate => {
            st.set(Opt::Rate)?;
            st.list.rate = true;
        }
        Item::Thresholds => {
            st.set(Opt::Thresholds)?;
            st.list.thresholds = true;
        }
        Item::PersistentConn => {
            st.set(Opt::PersistentConn)?;
            st.list.persistent_conn = true;
        }
        // Sorting is the default; --sort is a no-op, as in ipvsadm.
        Item::Sort => {}
        Item::NoSort => {
            st.set(Opt::NoSort)?;
            st.list.nosort = true;
        }
        Item::Exact => {
            st.set(Opt::Exact)?;
            st.list.exact = true;
        }
        Item::Health => {
            st.set(Opt::Health)?;
            st.list.health = true;
        }
        Item::Daemon => {
            st.set(Opt::Daemon)?;
            st.list.daemon = true;
        }
    }
    Ok(())
}

fn usage(message: &str) -> UsageError {
    UsageError {
        message: message.to_owned(),
        hint: false,
        popt: false,
    }
}

/// ipvsadm's `string_to_number`: a decimal in `0..=max`.
fn number(s: &str, max: u32) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u32>().ok().filter(|&n| n <= max)
}

/// ipvsadm's `parse_timeout`.
fn parse_timeout(s: &str, min: u32) -> Result<u32, UsageError> {
    match number(s, MAX_TIMEOUT) {
        Some(n) if n >= min => Ok(n),
        _ => fail(format!("invalid timeout value `{s}' specified")),
    }
}

/// `ADDR`, `ADDR:PORT`, `[V6]:PORT` or a bare IPv6 address (ipvsadm's `parse_service`, numeric only).
pub fn parse_addr_port(s: &str) -> Option<(IpAddr, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        let ip: std::net::Ipv6Addr = addr.parse().ok()?;
        return Some((IpAddr::V6(ip), Some(parse_port(port)?)));
    }
    if let Ok(ip) = s.parse::<std::net::Ipv6Addr>() {
        return Some((IpAddr::V6(ip), None));
    }
    match s.rsplit_once(':') {
        Some((a, p)) => Some((
            IpAddr::V4(a.parse::<Ipv4Addr>().ok()?),
            Some(parse_port(p)?),
        )),
        None => Some((IpAddr::V4(s.parse::<Ipv4Addr>().ok()?), None)),
    }
}

fn parse_port(s: &str) -> Option<u16> {
    number(s, 65535).map(|n| n as u16)
}

/// `-M`: a dotted IPv4 mask or a prefix length; `None` for a full mask (the default).
fn parse_netmask(s: &str, v6: bool) -> Result<Option<u8>, UsageError> {
    let full = if v6 { 128 } else { 32 };
    let len = if v6 {
        match number(s, 128) {
            Some(n) if n >= 1 => n as u8,
            _ => return fail("illegal ipv6 netmask specified"),
        }
    } else if let Some(n) = number(s, 32) {
        n as u8
    } else {
        let bad = || usage("illegal virtual server persistent mask specified");
        let m = u32::from(s.parse::<Ipv4Addr>().map_err(|_| bad())?);
        if m.leading_ones() + m.trailing_zeros() != 32 && m != 0 {
            return Err(bad());
        }
        m.leading_ones() as u8
    };
    Ok((len != full).then_some(len))
}

fn finish(mut st: State) -> Result<Invocation, UsageError> {
    let Some(cmd) = st.cmd else {
        return fail_hint("no command specified");
    };
    // generic_opt_check.
    let mut exclusive: Option<Opt> = None;
    for opt in ALL_OPTS {
        let r = rule(cmd, opt);
        if !st.has(opt) {
            if r == '+' {
                return fail(format!(
                    "You need to supply the '{}' option for the '{}' command",
                    opt.name(),
                    cmd.name()
                ));
            }
            continue;
        }
        match r {
            'x' => {
                return fail(format!(
                    "Illegal '{}' option with the '{}' command",
                    opt.name(),
                    cmd.name()
                ))
            }
            '1' => {
                if let Some(last) = exclusive {
                    return fail(format!(
                        "The option '{}' conflicts with the '{}' option in the '{}' command",
                        opt.name(),
                        last.name(),
                        cmd.name()
                    ));
                }
                exclusive = Some(opt);
            }
            _ => {}
        }
    }
    // Positional values: only --set takes them.
    let positional = std::mem::take(&mut st.positional);
    if cmd == Cmd::Set {
        if positional.len() < 3 {
            return fail("--set option requires 3 timeout values");
        }
        if let Some(extra) = positional.get(3) {
            return fail(format!("unexpected argument {extra}"));
        }
        let timeouts = TimeoutsView {
            tcp: parse_timeout(&positional[0], 0)?,
            tcpfin: parse_timeout(&positional[1], 0)?,
            udp: parse_timeout(&positional[2], 0)?,
        };
        return done(st.socket, Command::SetTimeouts(timeouts));
    }
    if let Some(extra) = positional.first() {
        return fail(format!("unexpected argument {extra}"));
    }
    let key = match st.svc {
        Some(Svc::Addr { proto, ip, port }) => Some(ServiceKey {
            proto,
            vip: ip,
            vport: port,
            mark: None,
        }),
        Some(Svc::Fwmark(m)) => Some(ServiceKey::of_mark(m)),
        None => None,
    };
    // Compulsory options were checked above, so `key` is there where the command needs it.
    let need_key = || key.ok_or_else(|| usage("You need to supply the 'service-address' option"));
    let command = match cmd {
        Cmd::Add | Cmd::Edit => {
            let key = need_key()?;
            if key.mark.is_none() && key.vport == 0 && st.persistent.is_none() {
                return fail("Zero port specified for non-persistent service");
            }
            let netmask = match &st.netmask {
                Some(m) => parse_netmask(m, key.vip.is_ipv6())?,
                None => None,
            };
            let scheduler = st
                .scheduler
                .take()
                .unwrap_or_else(|| DEFAULT_SCHEDULER.to_owned());
            // ipvsadm's parse_sched_flags: the generic names, or the named flags of the
            // scheduler given (an unknown scheduler is rvsd's to refuse).
            let sched = Scheduler::from_name(&scheduler).unwrap_or(Scheduler::Rr);
            for f in &st.sched_flags {
                if sched.flag_bit(f).is_some() {
                    continue;
                }
                let named = |s: &Scheduler| s.flag_names().contains(&f.as_str());
                return fail(if Scheduler::ALL.iter().any(named) {
                    format!("incompatible scheduler flag `{f}'")
                } else {
                    format!("invalid scheduler flag `{f}'")
                });
            }
            let spec = ServiceSpec {
                key,
                scheduler,
                persistent: st.persistent,
                netmask,
                sched_flags: std::mem::take(&mut st.sched_flags),
            };
            if cmd == Cmd::Add {
                Command::AddService(spec)
            } else {
                Command::EditService(spec)
            }
        }
        Cmd::Del => Command::DelService(need_key()?),
        Cmd::Flush => Command::Clear,
        Cmd::Restore => Command::Restore,
        Cmd::Save => Command::Save {
            numeric: st.list.numeric,
        },
        Cmd::AddDest | Cmd::EditDest | Cmd::DelDest => {
            let key = need_key()?;
            let (ip, port) = st
                .real
                .ok_or_else(|| usage("You need to supply the 'real-server' option"))?;
            // ipvsadm's default method is DR; `-e` without one keeps the server's (see
            // `Op::EditReal`).
            let keep_fwd = st.fwd.is_none();
            let fwd = st.fwd.unwrap_or(Fwd::Dr);
            // The port defaults to the service's. ipvsadm silently replaces a DR/TUN real server's
            // port with the service's; rvs refuses the request instead (the daemon says why), so
            // a mistyped port mapping is never applied as something else.
            let port = port.unwrap_or(key.vport);
            let addr = SocketAddr::new(ip, port);
            let real = RealSpec {
                addr,
                fwd,
                weight: st.weight.unwrap_or(1),
                upper: st.upper.unwrap_or(0),
                lower: st.lower.unwrap_or(0),
            };
            match cmd {
                Cmd::AddDest => Command::AddReal { key, real },
                Cmd::EditDest => Command::EditReal {
                    key,
                    real,
                    keep_fwd,
                },
                _ => Command::DelReal { key, addr },
            }
        }
        Cmd::List => {
            let mut list = st.list;
            list.service = key;
            // ipvsadm takes --persistent-conn with -c (its title gains the persistence
            // engine's columns), not with --timeout or --daemon.
            if (list.connections || list.timeout || list.daemon)
                && (list.stats
                    || (list.persistent_conn && !list.connections)
                    || list.rate
                    || list.thresholds
                    || list.health)
            {
                return fail("options conflicts in the list command");
            }
            // The Health column exists in the layouts with InActConn only (said, not ignored).
            if list.health && (list.stats || list.rate) {
                return fail("options conflicts in the list command: --health goes with the default, --thresholds and --persistent-conn layouts");
            }
            Command::List(list)
        }
        Cmd::Zero => Command::Zero(key),
        Cmd::AddLaddr | Cmd::DelLaddr => {
            let key = need_key()?;
            let lip = st
                .laddr
                .ok_or_else(|| usage("You need to supply the 'laddr' option"))?;
            if lip.is_ipv4() != key.vip.is_ipv4() {
                return fail(format!(
                    "local address {lip} is not of the service's address family"
                ));
            }
            if cmd == Cmd::AddLaddr {
                Command::AddLaddr { key, lip }
            } else {
                Command::DelLaddr { key, lip }
            }
        }
        Cmd::GetLaddr => Command::GetLaddr(key),
        Cmd::Reload => Command::Reload,
        Cmd::Validate => Command::Validate(st.validate.take()),
        Cmd::Status => Command::Status,
        Cmd::Help => Command::Help,
        Cmd::Version => Command::Version,
        Cmd::Set => unreachable!("handled above"),
    };
    done(st.socket, command)
}

fn done(socket: Option<PathBuf>, command: Command) -> Result<Invocation, UsageError> {
    Ok(Invocation { command, socket })
}

/// Splits a `-R` line into words: whitespace-separated, with `'...'` and `"..."` quoting and
/// `#` comments. `None` for an unterminated quote.
pub fn split_line(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                in_word = true;
            }
            None if c == '#' && !in_word => break,
            None if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            None => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return None;
    }
    if in_word {
        words.push(cur);
    }
    Some(words)
}
