//! rvsd's control side: answers control-socket requests over the [`Model`], publishes immutable
//! snapshots to the workers' mailboxes, sums the workers' per-real-server counters and keeps
//! IPVS-style rate estimates.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rvs_core::config::Fwd as CoreFwd;
use rvs_core::{DestStats, SessionInfo, TcpState};
use rvs_ctrlplane::config::Config;
use rvs_ctrlplane::ctl::model::{fwd_of, key_of, Model};
use rvs_ctrlplane::ctl::proto::{
    code, ConnView, Op, Proto, Rates, RealSpec, RealView, Request, Response, ServiceKey,
    ServiceView, Stats, TimeoutsView, MAX_CONNS_PAGE,
};
use rvs_ctrlplane::ctl::server::{Handler, RequestError};
use rvs_ctrlplane::health::{self, CheckId, Target};
use rvs_dataplane::ctl::{Built, Cmd, CtlLink, Snapshot};

/// Dest ids per daemon (the length of every worker's per-real-server counter array).
pub const MAX_DESTS: u32 = rvs_ctrlplane::config::MAX_REALS as u32;
/// How long a worker may take to answer a control command.
const WORKER_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a `-L -c` page sweeps before it is sent, however few sessions it found.
const CONNS_PAGE_TIME: Duration = Duration::from_millis(200);
/// Rate estimator period (IPVS: 2 s).
const EST_PERIOD: Duration = Duration::from_secs(2);
/// How soon a failed publication of a health change is tried again (first wait, longest wait).
const HEALTH_RETRY: Duration = Duration::from_secs(1);
const HEALTH_RETRY_MAX: Duration = Duration::from_secs(30);

struct Inner {
    model: Model,
    links: Vec<CtlLink>,
    running: Config,
    config_path: PathBuf,
    /// Counter values at the last `-Z`, subtracted from what is shown.
    zero: HashMap<u32, Stats>,
    /// Counter values of a dest id when it was given to its real server (an id comes back to a
    /// new real server only after every other id was handed out since, but its counters still
    /// hold the old one's): subtracted from everything shown.
    origin: HashMap<u32, Stats>,
    /// Per service, what its removed real servers had counted (IPVS keeps a service's counters
    /// apart from its dests': they do not go down when a real server goes), and the part of it
    /// counted before the last `-Z`.
    retired: HashMap<ServiceKey, (Stats, Stats)>,
    /// Real servers their health check says are down: their effective weight in the snapshots
    /// is 0 (`down_action = "quiesce"`) while the model keeps the configured one. Consulted only
    /// for real servers that have a check (one whose check was removed counts as up).
    down: HashSet<CheckId>,
    /// Health state changes per real server since start.
    transitions: HashMap<CheckId, u64>,
    /// Failed checks per checked real server (each one, below `fall` too).
    failures: HashMap<CheckId, u64>,
    /// When to publish the health state again: a publication of a health change failed (a
    /// worker late or refusing), so the workers may disagree on a real server until one
    /// succeeds. Any successful publication carries the state and clears it.
    health_retry: Option<std::time::Instant>,
    /// The wait before the next retry: 1 s, doubled after each failure up to 30 s.
    health_backoff: Duration,
}

/// The health checker's key of real `r` of service `s`: which real server, which instance.
fn check_id(
    model: &Model,
    s: &rvs_ctrlplane::config::ServiceConfig,
    r: &rvs_ctrlplane::config::RealConfig,
) -> CheckId {
    ((key_of(s), r.ip, r.port), model.epoch(s, r))
}

impl Inner {
    /// The health of real `r` of service `s`: `Some(up)` when it has a check.
    fn health_of(
        &self,
        s: &rvs_ctrlplane::config::ServiceConfig,
        r: &rvs_ctrlplane::config::RealConfig,
    ) -> Option<bool> {
        s.check_of(r)
            .map(|_| !self.down.contains(&check_id(&self.model, s, r)))
    }
}

/// Per-dest rate estimate (IPVS's estimator: 2 s samples, EWMA with weight 1/4).
#[derive(Default, Clone, Copy)]
struct Est {
    last: Stats,
    rates: [f64; 5],
}

/// What the control thread shares with the rest of rvsd.
pub struct Daemon {
    inner: Mutex<Inner>,
    dest_stats: Vec<Arc<[DestStats]>>,
    est: Mutex<HashMap<u32, Est>>,
    tsc_per_ms: u64,
    conn_table_size: u64,
    /// Builds the core services of a snapshot from the model (rvsd's `core_services`).
    build: fn(&Model) -> Vec<rvs_core::config::ServiceConf>,
    /// Converts the model's timeouts (seconds) to the core's (rvsd's `core_timeouts`).
    timeouts: fn(&rvs_ctrlplane::config::TimeoutsConfig) -> rvs_core::config::Timeouts,
    /// Reloads applied / refused or rolled back (`rvs_reloads_total{result}`).
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    /// Publications of health changes that failed, retries included.
    health_publish_failures: AtomicU64,
    /// Control requests answered with an error, indexed by `RequestError as usize`.
    control_errors: [AtomicU64; RequestError::ALL.len()],
}

impl Daemon {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        model: Model,
        links: Vec<CtlLink>,
        running: Config,
        dest_stats: Vec<Arc<[DestStats]>>,
        tsc_hz: u64,
        conn_table_size: u64,
        build: fn(&Model) -> Vec<rvs_core::config::ServiceConf>,
        timeouts: fn(&rvs_ctrlplane::config::TimeoutsConfig) -> rvs_core::config::Timeouts,
    ) -> Arc<Daemon> {
        let config_path = running.source.clone();
        Arc::new(Daemon {
            inner: Mutex::new(Inner {
                model,
                links,
                running,
                config_path,
                zero: HashMap::new(),
                origin: HashMap::new(),
                retired: HashMap::new(),
                down: HashSet::new(),
                transitions: HashMap::new(),
                failures: HashMap::new(),
                health_retry: None,
                health_backoff: HEALTH_RETRY,
            }),
            dest_stats,
            est: Mutex::new(HashMap::new()),
            tsc_per_ms: (tsc_hz / 1000).max(1),
            conn_table_size,
            build,
            timeouts,
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            health_publish_failures: AtomicU64::new(0),
            control_errors: Default::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Totals of dest `id` summed over workers.
    fn totals(&self, id: u32) -> (Stats, u64, u64) {
        let mut st = Stats::default();
        let (mut active, mut inactive) = (0, 0);
        for w in &self.dest_stats {
            if let Some(d) = w.get(id as usize) {
                st.conns += d.conns.get();
                st.inpkts += d.inpkts.get();
                st.outpkts += d.outpkts.get();
                st.inbytes += d.inbytes.get();
                st.outbytes += d.outbytes.get();
                active += d.active.get();
                inactive += d.inactive.get();
            }
        }
        (st, active, inactive)
    }

    /// Persistence templates pointing at dest `id`, summed over workers (ipvsadm's `PersistConn`).
    fn persist(&self, id: u32) -> u64 {
        self.dest_stats
            .iter()
            .filter_map(|w| w.get(id as usize))
            .map(|d| d.persist.get())
            .sum()
    }

    /// Sample every dest's counters every 2 s and update the rate estimates until `stop`.
    pub fn run_estimator(self: Arc<Self>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
        std::thread::Builder::new()
            .name("rvs-est".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EST_PERIOD);
                    let ids: Vec<u32> = {
                        let g = self.lock();
                        g.model
                            .services
                            .iter()
                            .flat_map(|s| s.reals.iter().map(|r| g.model.dest_id(s, r)))
                            .collect()
                    };
                    let mut est = self.est.lock().unwrap_or_else(|e| e.into_inner());
                    for id in ids {
                        let (now, _, _) = self.totals(id);
                        let e = est.entry(id).or_insert(Est {
                            last: now,
                            rates: [0.0; 5],
                        });
                        let secs = EST_PERIOD.as_secs_f64();
                        let cur = [
                            now.conns.saturating_sub(e.last.conns),
                            now.inpkts.saturating_sub(e.last.inpkts),
                            now.outpkts.saturating_sub(e.last.outpkts),
                            now.inbytes.saturating_sub(e.last.inbytes),
                            now.outbytes.saturating_sub(e.last.outbytes),
                        ];
                        for (r, c) in e.rates.iter_mut().zip(cur) {
                            *r += (c as f64 / secs - *r) / 4.0;
                        }
                        e.last = now;
                    }
                }
            })
            .expect("spawn the rate estimator")
    }

    fn rates(&self, id: u32) -> Rates {
        let est = self.est.lock().unwrap_or_else(|e| e.into_inner());
        let r = est.get(&id).map(|e| e.rates).unwrap_or_default();
        Rates {
            cps: r[0].round() as u64,
            inpps: r[1].round() as u64,
            outpps: r[2].round() as u64,
            inbps: r[3].round() as u64,
            outbps: r[4].round() as u64,
        }
    }

    /// What the metrics endpoint exports from the control side (cores and ports left empty):
    /// the services with their monotonic counters (not reset by `-Z`) and rates, the
    /// configuration generation, the reloads applied / failed, the control errors and the failed
    /// health publications. Only reads counters.
    pub fn metrics_sample(&self) -> rvs_ctrlplane::metrics::Sample {
        let g = self.lock();
        rvs_ctrlplane::metrics::Sample {
            services: self.views_of(&g, false),
            generation: g.model.generation,
            reloads_ok: self.reloads_ok.load(Ordering::Relaxed),
            reloads_failed: self.reloads_failed.load(Ordering::Relaxed),
            control_errors: std::array::from_fn(|i| self.control_errors[i].load(Ordering::Relaxed)),
            health_publish_failures: self.health_publish_failures.load(Ordering::Relaxed),
            log_lines_dropped: crate::log::DROPPED.load(Ordering::Relaxed),
            ..Default::default()
        }
    }

    fn views(&self, g: &Inner) -> Vec<ServiceView> {
        self.views_of(g, true)
    }

    /// Per-service views; `zeroed` subtracts the counters saved by `-Z` (rvsadm's view).
    fn views_of(&self, g: &Inner, zeroed: bool) -> Vec<ServiceView> {
        g.model
            .services
            .iter()
            .map(|s| {
                let mut sv = ServiceView {
                    spec: Model::spec_of(s),
                    reals: Vec::new(),
                    lips: s.lips.clone(),
                    stats: Stats::default(),
                    rates: Rates::default(),
                };
                if let Some(&(all, before_zero)) = g.retired.get(&key_of(s)) {
                    sv.stats = if zeroed { sub(all, before_zero) } else { all };
                }
                for r in &s.reals {
                    let id = g.model.dest_id(s, r);
                    let (mut st, active, inactive) = self.totals(id);
                    match g.zero.get(&id).filter(|_| zeroed) {
                        Some(z) => st = sub(st, *z),
                        None => st = sub(st, g.origin.get(&id).copied().unwrap_or_default()),
                    }
                    let rates = self.rates(id);
                    let up = g.health_of(s, r);
                    sv.stats = add(sv.stats, st);
                    sv.rates = add_rates(sv.rates, rates);
                    sv.reals.push(RealView {
                        spec: RealSpec {
                            addr: std::net::SocketAddr::new(r.ip, r.port),
                            fwd: fwd_of(r.forward),
                            weight: r.weight,
                            upper: r.upper,
                            lower: r.lower,
                        },
                        active,
                        inactive,
                        persist: self.persist(id),
                        stats: st,
                        rates,
                        health: up.map(|u| if u { "UP" } else { "DOWN" }.to_string()),
                        health_transitions: g
                            .transitions
                            .get(&check_id(&g.model, s, r))
                            .copied()
                            .unwrap_or(0),
                        health_failures: g
                            .failures
                            .get(&check_id(&g.model, s, r))
                            .copied()
                            .unwrap_or(0),
                    });
                }
                sv
            })
            .collect()
    }

    /// The counter values new dest ids start from: read before the snapshot that brings them is
    /// published, so the connections they get at once are theirs (not in their origin).
    fn fresh_origins(&self, g: &Inner, before: &Model) -> Vec<(u32, Stats)> {
        let old: HashMap<_, u32> = before.dest_ids().collect();
        g.model
            .dest_ids()
            .filter(|(k, id)| old.get(k) != Some(id))
            .map(|(_, id)| (id, self.totals(id).0))
            .collect()
    }

    /// After a change from `before` to the model: the counts of removed real servers move to
    /// their service's (when it stays), and ids given to a new real server start from `fresh`
    /// (their counter values before the publication; no `-Z` baseline, no rate history).
    fn rebase(&self, g: &mut Inner, before: &Model, fresh: Vec<(u32, Stats)>) {
        let old: HashMap<_, u32> = before.dest_ids().collect();
        let new: HashMap<_, u32> = g.model.dest_ids().collect();
        let services: HashSet<ServiceKey> = g.model.services.iter().map(key_of).collect();
        for (k, &id) in &old {
            if new.get(k) == Some(&id) || !services.contains(&k.0) {
                continue;
            }
            let origin = g.origin.get(&id).copied().unwrap_or_default();
            let all = sub(self.totals(id).0, origin);
            let before_zero = g
                .zero
                .get(&id)
                .map_or(Stats::default(), |z| sub(*z, origin));
            let r = g.retired.entry(k.0).or_default();
            *r = (add(r.0, all), add(r.1, before_zero));
        }
        g.retired.retain(|k, _| services.contains(k));
        let mut est = self.est.lock().unwrap_or_else(|e| e.into_inner());
        for (id, origin) in fresh {
            g.origin.insert(id, origin);
            g.zero.remove(&id);
            est.remove(&id);
        }
    }

    /// Publish the model as a new snapshot to every worker; all or nothing (a worker that refuses
    /// makes every worker go back to `previous`).
    fn publish(
        &self,
        g: &mut Inner,
        announce: Vec<(usize, std::net::IpAddr)>,
    ) -> Result<(), PublishError> {
        let mut services = (self.build)(&g.model);
        // Quiesce the real servers that are down: effective weight 0, sessions kept, their
        // persistence templates expired (`down`).
        let down_ids: HashSet<u32> = g
            .model
            .services
            .iter()
            .flat_map(|s| {
                s.reals
                    .iter()
                    .filter(|r| g.health_of(s, r) == Some(false))
                    .map(|r| g.model.dest_id(s, r))
            })
            .collect();
        if !down_ids.is_empty() {
            for d in services.iter_mut().flat_map(|s| s.dests.iter_mut()) {
                if down_ids.contains(&d.id) {
                    if d.weight > 0 {
                        d.last_weight = d.weight;
                    }
                    d.weight = 0;
                    d.down = true;
                }
            }
        }
        let snap = Arc::new(Snapshot::new(
            g.model.generation,
            services,
            (self.timeouts)(&g.model.timeouts),
            announce.into_iter().map(|(p, ip)| (p as u16, ip)).collect(),
        ));
        // Every worker's service set is built here, on the control thread: a worker only
        // attaches and swaps it between two bursts. A set that cannot be built touches no worker.
        let n_ports = g.running.ports.len();
        let mut built = Vec::with_capacity(g.links.len());
        for _ in 0..g.links.len() {
            built.push(
                Built::for_worker(&snap, MAX_DESTS, n_ports)
                    .map_err(|e| PublishError::Unpublished(e.to_string()))?,
            );
        }
        let mut failure = None;
        for ((w, link), built) in g.links.iter_mut().enumerate().zip(built) {
            let cmd = Box::new(Cmd::Apply {
                new: snap.clone(),
                old: None,
                built: Some(built),
                result: Ok(()),
            });
            match link.call(cmd, WORKER_TIMEOUT) {
                Ok(reply) => {
                    if let Cmd::Apply { result: Err(e), .. } = *reply {
                        failure = Some(format!("worker {w}: {e}"));
                    }
                    // `old` (the snapshot this worker left) and `built` (the service set it
                    // replaced) are dropped here, on the control thread.
                }
                Err(e) => failure = Some(format!("worker {w}: {e}")),
            }
        }
        if failure.is_none() {
            // This set carries the health state as it is now.
            g.health_retry = None;
            g.health_backoff = HEALTH_RETRY;
        }
        failure.map_or(Ok(()), |e| Err(PublishError::Partly(e)))
    }

    /// Publish the health state after a change (or to retry one that failed). A failure is
    /// counted and retried from the health checker's loop, after 1 s, then twice as long after
    /// each failure up to 30 s; logged at the first failure of a run. A retry waits while a
    /// worker still holds a command it did not answer in time (another publication would only
    /// queue behind it in its mailbox).
    fn publish_health(&self, g: &mut Inner) {
        let now = std::time::Instant::now();
        let stuck = g.links.iter_mut().map(|l| l.reap()).sum::<usize>() > 0;
        let r = if stuck {
            Err("a worker has not answered an earlier command yet".to_string())
        } else {
            self.publish(g, Vec::new()).map_err(|e| e.to_string())
        };
        if let Err(e) = r {
            self.health_publish_failures.fetch_add(1, Ordering::Relaxed);
            let wait = g.health_backoff;
            if g.health_retry.is_none() {
                say!("rvsd: health: publishing the new weights failed (retried in {} s, then less often): {e}", wait.as_secs());
            }
            g.health_retry = Some(now + wait);
            g.health_backoff = (wait * 2).min(HEALTH_RETRY_MAX);
        }
    }

    /// After `publish` failed for the model that is now `g.model`: back to `before` on every
    /// worker when some took the new set (its addresses re-announced, under the generation after
    /// the failed one); nothing to undo when none did (the failed generation's number is then
    /// used again by the next change: no worker ever ran it). Returns the message for the reply.
    fn roll_back(&self, g: &mut Inner, before: Model, e: PublishError) -> String {
        match e {
            PublishError::Unpublished(m) => {
                g.model = before;
                m
            }
            PublishError::Partly(m) => {
                let back = announce_of(&g.model, &before);
                // Some workers ran the failed generation: the one that undoes it is a new one,
                // so a number never names two different configurations.
                let failed = g.model.generation;
                g.model = before;
                g.model.generation = failed + 1;
                if let Err(r) = self.publish(g, back) {
                    say!("rvsd: rolling back a failed publication failed too (retried with the health state): {r}");
                    // Workers may be left on different sets: publish the model again until
                    // they agree (the health retry does exactly that), from now on.
                    g.health_retry = Some(std::time::Instant::now());
                    g.health_backoff = HEALTH_RETRY;
                }
                m
            }
        }
    }

    /// Re-read the configuration file and apply what changed (SIGHUP, `rvsadm --reload`).
    pub fn reload(&self) -> Response {
        let r = self.reload_inner();
        let n = match r {
            Response::Reloaded { .. } => &self.reloads_ok,
            _ => &self.reloads_failed,
        };
        n.fetch_add(1, Ordering::Relaxed);
        r
    }

    fn reload_inner(&self) -> Response {
        // The file is read and parsed without the lock (a slow filesystem holds no request).
        let path = self.lock().config_path.clone();
        let loaded = Config::load(&path);
        let mut g = self.lock();
        let cfg = match loaded {
            Ok(c) => c,
            Err(e) => {
                return Response::Error {
                    code: code::EINVAL,
                    message: format!("reload refused, nothing changed: {e}"),
                }
            }
        };
        let needs_restart = restart_only_changes(&g.running, &cfg);
        // Services name their ports by index into the file's [[port]] list and reach their real
        // servers through its routes: against the ports and routes still running, a changed
        // list would put VIPs on another NIC, or real servers behind a route never installed.
        let binding: Vec<&String> = needs_restart
            .iter()
            .filter(|c| *c == "port" || *c == "route")
            .collect();
        if !binding.is_empty() {
            return Response::Error {
                code: code::EINVAL,
                message: format!(
                    "reload refused, nothing changed: the {} section{} changed, which services \
                     depend on and only a restart applies",
                    binding
                        .iter()
                        .map(|c| format!("[[{c}]]"))
                        .collect::<Vec<_>>()
                        .join(" and "),
                    if binding.len() > 1 { "s" } else { "" }
                ),
            };
        }
        let before = g.model.clone();
        let changes = g.model.replace(&cfg);
        let mut fresh = Vec::new();
        if !changes.is_empty() {
            let announce = announce_of(&before, &g.model);
            fresh = self.fresh_origins(&g, &before);
            if let Err(e) = self.publish(&mut g, announce) {
                // Back on every worker; addresses the failed change released on some workers
                // are owned again there, and announced again.
                let e = self.roll_back(&mut g, before, e);
                return Response::Error {
                    code: code::EINVAL,
                    message: format!("reload failed, previous configuration kept: {e}"),
                };
            }
        }
        self.rebase(&mut g, &before, fresh);
        let mut changes = changes;
        if g.running.health != cfg.health {
            // Taken by the checker's next probes (no publication to the workers).
            changes.push("changed [health]".into());
        }
        g.running.services = cfg.services.clone();
        g.running.health = cfg.health.clone();
        g.running.fullnat.timeouts = cfg.fullnat.timeouts.clone();
        Response::Reloaded {
            generation: g.model.generation,
            changes,
            needs_restart,
        }
    }

    fn edit(&self, op: &Op) -> Response {
        let mut g = self.lock();
        let before = g.model.clone();
        match g.model.apply(op) {
            Err((code, message)) => Response::Error { code, message },
            Ok(announce) => {
                let fresh = self.fresh_origins(&g, &before);
                match self.publish(&mut g, announce) {
                    Ok(()) => {
                        self.rebase(&mut g, &before, fresh);
                        Response::Ok
                    }
                    Err(e) => Response::Error {
                        code: code::EINVAL,
                        message: self.roll_back(&mut g, before, e),
                    },
                }
            }
        }
    }

    /// A page of `-L -c`: up to `max` sessions from cursor `start` (worker << 40 | slot). The
    /// daemon's lock is taken for one worker call at a time, and a page ends after
    /// [`CONNS_PAGE_TIME`] however few it found, once it made one call at least (the client
    /// asks on from `next`, which is then past `start`): a sweep of
    /// a large, mostly empty table never holds the other requests, health checks and scrapes.
    fn conns(&self, start: u64, max: u32) -> Response {
        let max = max.clamp(1, MAX_CONNS_PAGE) as usize;
        let t0 = std::time::Instant::now();
        let now = dpdk::eal::tsc() / self.tsc_per_ms;
        let (mut w, mut slot) = ((start >> 40) as usize, (start & ((1 << 40) - 1)) as usize);
        let mut entries = Vec::new();
        let workers = self.lock().links.len();
        let mut calls = 0;
        // At least one worker call per page, whatever the wait for the lock: a page always
        // moves the cursor on.
        while w < workers && entries.len() < max && (calls == 0 || t0.elapsed() < CONNS_PAGE_TIME) {
            calls += 1;
            let mut g = self.lock();
            let cmd = Box::new(Cmd::Sessions {
                start: slot,
                out: Vec::with_capacity(max - entries.len()),
                next: None,
            });
            let reply = match g.links[w].call(cmd, WORKER_TIMEOUT) {
                Ok(r) => r,
                Err(e) => {
                    return Response::Error {
                        code: code::EINVAL,
                        message: format!("worker {w}: {e}"),
                    }
                }
            };
            let Cmd::Sessions { out, next, .. } = *reply else {
                break;
            };
            entries.extend(out.into_iter().map(|s| conn_view(&s, now)));
            match next {
                Some(n) => slot = n,
                None => {
                    w += 1;
                    slot = 0;
                }
            }
        }
        let next = (w < workers).then_some(((w as u64) << 40) | slot as u64);
        Response::Conns { entries, next }
    }
}

fn add(a: Stats, b: Stats) -> Stats {
    Stats {
        conns: a.conns + b.conns,
        inpkts: a.inpkts + b.inpkts,
        outpkts: a.outpkts + b.outpkts,
        inbytes: a.inbytes + b.inbytes,
        outbytes: a.outbytes + b.outbytes,
    }
}

fn sub(a: Stats, b: Stats) -> Stats {
    Stats {
        conns: a.conns.saturating_sub(b.conns),
        inpkts: a.inpkts.saturating_sub(b.inpkts),
        outpkts: a.outpkts.saturating_sub(b.outpkts),
        inbytes: a.inbytes.saturating_sub(b.inbytes),
        outbytes: a.outbytes.saturating_sub(b.outbytes),
    }
}

fn add_rates(a: Rates, b: Rates) -> Rates {
    Rates {
        cps: a.cps + b.cps,
        inpps: a.inpps + b.inpps,
        outpps: a.outpps + b.outpps,
        inbps: a.inbps + b.inbps,
        outbps: a.outbps + b.outbps,
    }
}

fn announce_of(before: &Model, after: &Model) -> Vec<(usize, std::net::IpAddr)> {
    let old = before.owned_addrs();
    after
        .owned_addrs()
        .into_iter()
        .filter(|a| old.binary_search(a).is_err())
        .collect()
}

/// Why a publication failed.
enum PublishError {
    /// The service set could not be built: no worker was sent anything.
    Unpublished(String),
    /// Some worker refused or did not answer: the workers may be on different sets.
    Partly(String),
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::Unpublished(m) | PublishError::Partly(m) => f.write_str(m),
        }
    }
}

/// IPVS's state names as `ipvsadm -L -c` prints them.
fn state_name(s: &SessionInfo) -> &'static str {
    match s.tcp_state {
        None => "UDP",
        Some(t) => match t {
            TcpState::None => "NONE",
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::SynAck => "SYNACK",
        },
    }
}

fn conn_view(s: &SessionInfo, now_ms: u64) -> ConnView {
    use std::net::{IpAddr, SocketAddr};
    let full = s.fwd == CoreFwd::FullNat;
    ConnView {
        proto: match s.proto {
            rvs_core::config::Proto::Tcp => Proto::Tcp,
            rvs_core::config::Proto::Udp => Proto::Udp,
        },
        state: state_name(s).to_string(),
        expire_ms: s.expires_ms.saturating_sub(now_ms),
        client: SocketAddr::new(IpAddr::V4(s.cip), s.cport),
        virt: SocketAddr::new(IpAddr::V4(s.vip), s.vport),
        dest: SocketAddr::new(IpAddr::V4(s.rip), s.rport),
        local: (full && !s.template).then(|| SocketAddr::new(IpAddr::V4(s.lip), s.lport)),
    }
}

/// Settings a reload cannot change in a running rvsd.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut v = Vec::new();
    if old.eal != new.eal {
        v.push("eal".to_string());
    }
    if old.dataplane != new.dataplane {
        v.push("dataplane".to_string());
    }
    if old.neighbour != new.neighbour {
        v.push("neighbour".to_string());
    }
    if old.ports != new.ports {
        v.push("port".to_string());
    }
    if old.routes != new.routes {
        v.push("route".to_string());
    }
    if old.control != new.control {
        v.push("control".to_string());
    }
    if old.metrics != new.metrics {
        v.push("metrics".to_string());
    }
    let mut a = old.fullnat.clone();
    a.timeouts = new.fullnat.timeouts.clone();
    if a != new.fullnat {
        v.push("fullnat (other than timeouts)".to_string());
    }
    v
}

/// The health checker's view of the daemon: the checked real servers of the model, and what a
/// state change does (`down_action = "quiesce"`: republish with the real's effective weight 0 or
/// back to its configured weight; existing sessions are kept).
impl health::Sink for Daemon {
    fn targets(&self) -> Vec<Target> {
        let mut g = self.lock();
        if g.health_retry
            .is_some_and(|at| at <= std::time::Instant::now())
        {
            self.publish_health(&mut g);
        }
        let source = g.running.health.source;
        let mut v = Vec::new();
        for s in &g.model.services {
            for r in &s.reals {
                if let Some(c) = s.check_of(r) {
                    let t = Target::new(key_of(s), r.ip, r.port, c, source);
                    v.push(t.with_epoch(g.model.epoch(s, r)));
                }
            }
        }
        // Forget the state of real servers that are gone or no longer checked (the checker
        // forgets them too, so a check added again starts up).
        if !g.down.is_empty() || !g.transitions.is_empty() || !g.failures.is_empty() {
            let ids: HashSet<CheckId> = v.iter().map(|t| t.key()).collect();
            g.down.retain(|id| ids.contains(id));
            g.transitions.retain(|id, _| ids.contains(id));
            g.failures.retain(|id, _| ids.contains(id));
        }
        v
    }

    fn transition(&self, t: &Target, up: bool, detail: &str) {
        let mut g = self.lock();
        let changed = if up {
            g.down.remove(&t.key())
        } else {
            g.down.insert(t.key())
        };
        *g.transitions.entry(t.key()).or_insert(0) += 1;
        say!("rvsd: {}", health::transition_line(t, up, detail));
        // The last available real server of its service went: say what that means.
        if changed && !up {
            let svc = g.model.services.iter().find(|s| key_of(s) == t.id.0);
            if let Some(s) = svc.filter(|s| {
                s.reals
                    .iter()
                    .all(|r| r.weight == 0 || g.health_of(s, r) == Some(false))
            }) {
                say!(
                    "rvsd: health: no real server of {} is available (down or weight 0): its new connections are dropped (no_dest) until one comes back",
                    key_of(s).name()
                );
            }
        }
        if changed {
            self.publish_health(&mut g);
        }
    }

    fn checked(&self, t: &Target, ok: bool) {
        if !ok {
            *self.lock().failures.entry(t.key()).or_insert(0) += 1;
        }
    }
}

impl Handler for Daemon {
    fn count_error(&self, why: RequestError) {
        self.control_errors[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn handle(&self, req: Request) -> Response {
        match req.op {
            Op::Status => {
                let g = self.lock();
                Response::Status {
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    generation: g.model.generation,
                    workers: g.links.len() as u32,
                    conn_table_size: self.conn_table_size,
                }
            }
            Op::ListServices => {
                let g = self.lock();
                Response::Services {
                    services: self.views(&g),
                }
            }
            Op::GetService { key } => {
                let g = self.lock();
                match self.views(&g).into_iter().find(|v| v.spec.key == key) {
                    Some(service) => Response::Service { service },
                    None => Response::Error {
                        code: code::ESRCH,
                        message: "No such service".into(),
                    },
                }
            }
            Op::GetTimeouts => {
                let g = self.lock();
                let t = &g.model.timeouts;
                Response::Timeouts {
                    timeouts: TimeoutsView {
                        tcp: t.tcp,
                        tcpfin: t.tcpfin,
                        udp: t.udp,
                    },
                }
            }
            Op::Zero { key } => {
                let mut g = self.lock();
                let ids: Vec<u32> = g
                    .model
                    .services
                    .iter()
                    .filter(|s| key.is_none_or(|k| key_of(s) == k))
                    .flat_map(|s| s.reals.iter().map(|r| g.model.dest_id(s, r)))
                    .collect();
                // A service without real servers zeroes nothing, and is no error (ipvsadm).
                if key.is_some_and(|k| !g.model.services.iter().any(|s| key_of(s) == k)) {
                    return Response::Error {
                        code: code::ESRCH,
                        message: "No such service".into(),
                    };
                }
                // The rates too (IPVS `ip_vs_zero_estimator`): `-L --rate` starts again from 0.
                let mut est = self.est.lock().unwrap_or_else(|e| e.into_inner());
                for id in ids {
                    let (st, _, _) = self.totals(id);
                    g.zero.insert(id, st);
                    if let Some(e) = est.get_mut(&id) {
                        e.rates = [0.0; 5];
                    }
                }
                drop(est);
                for (k, r) in g.retired.iter_mut() {
                    if key.is_none_or(|z| *k == z) {
                        r.1 = r.0;
                    }
                }
                Response::Ok
            }
            Op::ListConns { start, max } => self.conns(start, max),
            Op::Validate { path } => {
                let p = path
                    .map(PathBuf::from)
                    .unwrap_or_else(|| self.lock().config_path.clone());
                match Config::load(&p) {
                    Ok(_) => Response::Ok,
                    Err(e) => Response::Error {
                        code: code::EINVAL,
                        message: e.to_string(),
                    },
                }
            }
            Op::Reload => self.reload(),
            op => self.edit(&op),
        }
    }
}
