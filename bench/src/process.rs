//! Memory and CPU of the processes that do the work, read from `/proc`: the consumer
//! (`blueshift`, a native apply or tablesync worker, `pg_recvlogical`, `pg_dump`/`pg_restore`)
//! and the walsender that feeds it.
//!
//! A [`Watch`] samples every [`SAMPLE_EVERY`] and resolves its pid sources (a slot's
//! `active_pid`, a subscription's workers, a process tree) every [`RESOLVE_EVERY`].
//!
//! - CPU-seconds: `utime + stime` of `/proc/<pid>/stat`, from the process's start (a process
//!   that started during the measurement) or from when the watch first saw it, to the last
//!   sample.
//! - Context switches: `voluntary_ctxt_switches + nonvoluntary_ctxt_switches` summed over the
//!   process's threads (`/proc/<pid>/task/*/status`), counted the same way (a thread that ended
//!   before the last sample keeps what it had at the sample before).
//! - Peak RSS: the largest sum over the role's processes of their *private* resident memory
//!   (`VmRSS − RssShmem`: a PostgreSQL backend's touched shared buffers are not its own), and,
//!   for a process without shared memory watched from its start, the kernel's exact
//!   high-water mark `VmHWM`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::server::query_value;

pub(crate) const SAMPLE_EVERY: Duration = Duration::from_millis(50);
pub(crate) const RESOLVE_EVERY: Duration = Duration::from_millis(250);

/// What a watched process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Role {
    /// blueshift, the native apply worker, pg_recvlogical, …
    Consumer,
    /// The walsender streaming to the consumer.
    Walsender,
    /// The consumer's own sessions on green (blueshift's applier, durability and other
    /// backends), where most of its apply work runs; a native apply worker has none besides
    /// itself.
    GreenBackends,
}

/// Where the CPU count starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Since {
    /// The process started for this measurement: count all its CPU time.
    Start,
    /// The process existed before: count from when the watch first saw it.
    Now,
}

/// How to find the pids of a role.
pub(crate) enum Source {
    /// A process started by the bench, without shared memory (`VmHWM` is exact).
    Own(u32),
    /// A process and all its descendants (pg_restore's workers).
    Tree(u32),
    /// The walsender holding a slot: `active_pid` of `pg_replication_slots` on blue.
    Slot {
        client: Arc<tokio_postgres::Client>,
        slot: String,
    },
    /// The workers of a subscription: `pg_stat_subscription` on green.
    Subscription {
        client: Arc<tokio_postgres::Client>,
        name: String,
    },
    /// Client backends of database `database` whose `application_name` starts with `prefix`
    /// (`pg_stat_activity` on the server `client` is connected to), the bench's own sessions
    /// ([`BENCH_APPLICATION_NAME`](crate::server::BENCH_APPLICATION_NAME)) left out.
    Backends {
        client: Arc<tokio_postgres::Client>,
        database: String,
        prefix: String,
    },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Own(p) => write!(f, "Own({p})"),
            Source::Tree(p) => write!(f, "Tree({p})"),
            Source::Slot { slot, .. } => write!(f, "Slot({slot})"),
            Source::Subscription { name, .. } => write!(f, "Subscription({name})"),
            Source::Backends {
                database, prefix, ..
            } => write!(f, "Backends({database}, {prefix}*)"),
        }
    }
}

/// One role's usage over a measurement.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Usage {
    pub(crate) cpu_seconds: f64,
    pub(crate) peak_rss_mib: f64,
    /// Context switches of its threads, voluntary and not.
    pub(crate) context_switches: f64,
    /// How many processes were seen.
    pub(crate) processes: usize,
}

#[derive(Debug)]
struct Tracked {
    role: Role,
    /// Whether its RSS includes shared memory (a PostgreSQL process).
    shared: bool,
    base_ticks: u64,
    last_ticks: u64,
    base_switches: u64,
    last_switches: u64,
    private_kib: u64,
    hwm_kib: u64,
    alive: bool,
}

#[derive(Debug, Default)]
struct State {
    tracked: HashMap<u32, Tracked>,
    peak_private_kib: HashMap<Role, u64>,
}

/// A running sampler; [`Watch::finish`] stops it and returns the usage per role.
#[derive(Debug)]
pub(crate) struct Watch {
    state: Arc<Mutex<State>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Watch {
    /// Starts sampling the processes found through `sources`; `enabled` = false (the servers
    /// are not on this machine) watches nothing and reports no usage.
    pub(crate) fn start(sources: Vec<(Role, Since, Source)>, enabled: bool) -> Watch {
        let state = Arc::new(Mutex::new(State::default()));
        let (stop, mut stopped) = watch::channel(false);
        let shared = state.clone();
        let task = tokio::spawn(async move {
            if !enabled {
                return;
            }
            let sources = sources;
            let per_resolve = (RESOLVE_EVERY.as_millis() / SAMPLE_EVERY.as_millis()).max(1);
            let mut tick: u128 = 0;
            let mut found = vec![false; sources.len()];
            loop {
                // Until every source has shown a process, look at every sample: a walsender
                // starts a moment after its consumer.
                if tick % per_resolve == 0 || found.iter().any(|f| !f) {
                    resolve(&shared, &sources, &mut found).await;
                }
                sample(&shared);
                tick += 1;
                tokio::select! {
                    _ = tokio::time::sleep(SAMPLE_EVERY) => {}
                    _ = stopped.changed() => break,
                }
            }
        });
        Watch { state, stop, task }
    }

    /// Takes a last sample, stops, and returns the usage of each role seen.
    pub(crate) async fn finish(self) -> HashMap<Role, Usage> {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        sample(&self.state);
        let state = self.state.lock().expect("the sampler does not panic");
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        let mut usage: HashMap<Role, Usage> = HashMap::new();
        for t in state.tracked.values() {
            let u = usage.entry(t.role).or_default();
            u.cpu_seconds += t.last_ticks.saturating_sub(t.base_ticks) as f64 / ticks;
            u.context_switches += t.last_switches.saturating_sub(t.base_switches) as f64;
            u.processes += 1;
            if !t.shared {
                u.peak_rss_mib = u.peak_rss_mib.max(t.hwm_kib as f64 / 1024.0);
            }
        }
        for (role, kib) in &state.peak_private_kib {
            if let Some(u) = usage.get_mut(role) {
                u.peak_rss_mib = u.peak_rss_mib.max(*kib as f64 / 1024.0);
            }
        }
        usage
    }
}

async fn resolve(state: &Arc<Mutex<State>>, sources: &[(Role, Since, Source)], found: &mut [bool]) {
    for (i, (role, since, source)) in sources.iter().enumerate() {
        let (pids, shared): (Vec<u32>, bool) = match source {
            Source::Own(pid) => (vec![*pid], false),
            Source::Tree(pid) => (descendants(*pid), false),
            Source::Slot { client, slot } => {
                let sql = format!(
                    "SELECT active_pid FROM pg_catalog.pg_replication_slots WHERE slot_name = {}",
                    crate::server::literal(slot)
                );
                let pid = query_value(client, &sql)
                    .await
                    .ok()
                    .and_then(|v| v.parse().ok());
                (pid.into_iter().collect(), true)
            }
            Source::Subscription { client, name } => {
                let sql = format!(
                    "SELECT string_agg(pid::text, ',') FROM pg_catalog.pg_stat_subscription \
                     WHERE subname = {} AND pid IS NOT NULL",
                    crate::server::literal(name)
                );
                let pids = query_value(client, &sql).await.unwrap_or_default();
                (
                    pids.split(',').filter_map(|p| p.parse().ok()).collect(),
                    true,
                )
            }
            Source::Backends {
                client,
                database,
                prefix,
            } => {
                let sql = format!(
                    "SELECT string_agg(pid::text, ',') FROM pg_catalog.pg_stat_activity \
                     WHERE datname = {} AND backend_type = 'client backend' \
                     AND pg_catalog.starts_with(application_name, {}) \
                     AND application_name OPERATOR(pg_catalog.<>) {}",
                    crate::server::literal(database),
                    crate::server::literal(prefix),
                    crate::server::literal(crate::server::BENCH_APPLICATION_NAME)
                );
                let pids = query_value(client, &sql).await.unwrap_or_default();
                (
                    pids.split(',').filter_map(|p| p.parse().ok()).collect(),
                    true,
                )
            }
        };
        found[i] |= !pids.is_empty();
        let mut st = state.lock().expect("the sampler does not panic");
        for pid in pids {
            if st.tracked.contains_key(&pid) {
                continue;
            }
            let Some(stat) = read_stat(pid) else { continue };
            let switches = read_switches(pid);
            let (base_ticks, base_switches) = match since {
                Since::Start => (0, 0),
                Since::Now => (stat, switches),
            };
            st.tracked.insert(
                pid,
                Tracked {
                    role: *role,
                    shared,
                    base_ticks,
                    last_ticks: stat,
                    base_switches,
                    last_switches: switches,
                    private_kib: 0,
                    hwm_kib: 0,
                    alive: true,
                },
            );
        }
    }
}

fn sample(state: &Arc<Mutex<State>>) {
    let mut st = state.lock().expect("the sampler does not panic");
    let mut sums: HashMap<Role, u64> = HashMap::new();
    for (pid, t) in st.tracked.iter_mut() {
        if !t.alive {
            continue;
        }
        match (read_stat(*pid), read_status(*pid)) {
            (Some(ticks), Some(mem)) => {
                t.last_ticks = t.last_ticks.max(ticks);
                t.last_switches = t.last_switches.max(read_switches(*pid));
                t.private_kib = mem.rss_kib.saturating_sub(mem.shmem_kib);
                t.hwm_kib = t.hwm_kib.max(mem.hwm_kib);
                *sums.entry(t.role).or_default() += t.private_kib;
            }
            (Some(ticks), None) => {
                // A zombie: its CPU time is final, its memory gone.
                t.last_ticks = t.last_ticks.max(ticks);
                t.alive = false;
            }
            _ => t.alive = false,
        }
    }
    for (role, sum) in sums {
        let peak = st.peak_private_kib.entry(role).or_default();
        *peak = (*peak).max(sum);
    }
}

/// `utime + stime` in clock ticks.
fn read_stat(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = text.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state(3) ppid(4) … utime(14) stime(15).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Context switches, voluntary and not, summed over the threads of `pid` (0 when it is gone).
fn read_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    let mut total = 0;
    for task in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        for line in text.lines() {
            if let Some(("voluntary_ctxt_switches" | "nonvoluntary_ctxt_switches", value)) =
                line.split_once(':')
            {
                total += value.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    total
}

#[derive(Debug, Default)]
struct Memory {
    rss_kib: u64,
    shmem_kib: u64,
    hwm_kib: u64,
}

fn read_status(pid: u32) -> Option<Memory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut m = Memory::default();
    let mut any = false;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let kib = || {
            value
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        match key {
            "VmRSS" => {
                m.rss_kib = kib();
                any = true;
            }
            "RssShmem" => m.shmem_kib = kib(),
            "VmHWM" => m.hwm_kib = kib(),
            _ => {}
        }
    }
    any.then_some(m)
}

/// `root` and every process below it.
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .parse::<u32>()
                        .ok()
                });
            if let Some(ppid) = ppid {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}
