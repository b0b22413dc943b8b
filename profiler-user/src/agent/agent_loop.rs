//! The agent's sampling loop: an [`AgentLoop`] owns the collector, the
//! containers being profiled, the current window and the loop's counters;
//! its methods are the loop's steps (rescan, attribute, flush, publish).

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use profiler_common::Counter;
use profiler_kube::pods::PodCache;
use profiler_symbolize::ProfileMeta;

use super::{
    api::{ApiState, LiveTarget},
    metrics::MetricDef,
    store::WindowMeta,
    targets::{self, Found, PidMap, Resolved},
    AgentError, AgentOptions, AgentSummary, MAX_TARGETS, MAX_WINDOW_STACKS,
};
use crate::{
    collector::{Aggregate, Collector, DrainPass, StopSignals},
    error::RecordError,
    sampler::DrainedStack,
};

/// One profiled container.
struct Target {
    found: Found,
    resolved: Resolved,
    since: SystemTime,
    /// cgroup v1 only: the pids put in the eBPF pid filter for it.
    pids: HashSet<u32>,
}

/// Per-window state: one aggregate per container id.
struct Window {
    start: SystemTime,
    end: SystemTime,
    per_container: HashMap<String, Aggregate>,
    /// Distinct stacks over all containers (bounded by [`MAX_WINDOW_STACKS`]).
    distinct: usize,
}

impl Window {
    /// An empty window from `start` to the next wall-clock boundary.
    fn new(start: SystemTime, len: Duration) -> Self {
        Window {
            start,
            end: next_boundary(start, len),
            per_container: HashMap::new(),
            distinct: 0,
        }
    }
}

/// The next wall-clock multiple of `window` after `t`.
fn next_boundary(t: SystemTime, window: Duration) -> SystemTime {
    let w = window.as_millis().max(1);
    let now = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    let next = (now / w + 1) * w;
    UNIX_EPOCH + Duration::from_millis(next as u64)
}

/// Counters of the loop (besides the kernel's), exported in `/metrics`.
#[derive(Default)]
struct LoopCounters {
    samples: u64,
    unattributed: u64,
    not_selected: u64,
    targets_overflow: u64,
    windows: u64,
    write_errors: u64,
    scans: u64,
    scan_truncated: u64,
    undecided: u64,
    pid_filter_overflow: u64,
    stack_table_full: u64,
    offcpu_groups_overflow: u64,
}

/// The agent's loop and everything it owns.
pub(super) struct AgentLoop<'a> {
    opts: &'a AgentOptions,
    root: PathBuf,
    /// cgroup v1: the eBPF filter follows pids, not cgroup ids.
    v1: bool,
    collector: Collector,
    /// The store, metrics and live targets the API serves.
    shared: Arc<ApiState>,
    pods: Option<PodCache>,
    targets: HashMap<String, Target>,
    /// Containers that went away during the current window (written at
    /// its end, then forgotten).
    departed: HashMap<String, Target>,
    seen: HashSet<String>,
    pidmap: PidMap,
    counters: LoopCounters,
    summary: AgentSummary,
    window: Window,
    /// Go profiles: per container, its Go processes seen this window.
    go: GoTargets,
    /// The `memory` profile type's samples of the current window.
    memory: super::memory_window::MemoryWindow,
    /// offcpu: the container of each process with off-CPU time, noted
    /// while it runs (a process may exit before its window is cut);
    /// processes gone are forgotten after each window.
    offcpu_groups: HashMap<u32, String>,
}

/// Processes remembered in `offcpu_groups` at most (over it: counted,
/// their off-CPU time is attributed only while they run).
const MAX_OFFCPU_GROUPS: usize = 65_536;

/// The agent's Go-profile bookkeeping: which processes of which container
/// have Go probes, and why a container has no Go profiles.
#[derive(Default)]
struct GoTargets {
    /// Container id -> its Go processes (live or exited this window).
    members: HashMap<String, HashSet<u32>>,
    /// Container id -> why its Go profiles (or some of them) are absent
    /// or empty.
    absent: HashMap<String, Vec<String>>,
    /// Processes the Go probes could not be attached to (kernel errors).
    attach_errors: u64,
    /// Container id -> the last attach error of one of its processes.
    errors: HashMap<String, String>,
    /// Go processes not remembered because a container had too many.
    members_overflow: u64,
}

/// Why the Go probes of `pid` could not be attached, for the log and
/// `/targets`. Measured (tests/tests/agent_go.rs): with the DaemonSet's
/// capabilities (BPF, PERFMON, SYS_PTRACE, ... but not SYS_ADMIN),
/// `perf_event_open` of the `uprobe` PMU is refused with EACCES while the
/// CPU sampler works.
fn attach_error_text(pid: u32, e: &RecordError) -> String {
    if e.exit_code() == crate::error::exit::PERMISSION {
        format!(
            "Go probes for pid {pid}: permission denied: attaching uprobes needs CAP_SYS_ADMIN \
             (CAP_BPF and CAP_PERFMON are not enough); the Go profile types stay absent, cpu is unaffected"
        )
    } else {
        format!("Go probes for pid {pid} could not be attached: {e}")
    }
}

/// Go processes remembered per container and window.
const MAX_GO_MEMBERS: usize = 1024;

impl<'a> AgentLoop<'a> {
    /// A loop over `collector` (sampler loaded, filter set up) that
    /// writes to the store in `shared` and publishes there.
    pub(super) fn new(
        opts: &'a AgentOptions,
        root: PathBuf,
        v1: bool,
        collector: Collector,
        shared: Arc<ApiState>,
        pods: Option<PodCache>,
    ) -> Self {
        AgentLoop {
            opts,
            root,
            v1,
            collector,
            shared,
            pods,
            targets: HashMap::new(),
            departed: HashMap::new(),
            seen: HashSet::new(),
            pidmap: PidMap::default(),
            counters: LoopCounters::default(),
            summary: AgentSummary::default(),
            window: Window::new(SystemTime::now(), opts.window),
            go: GoTargets::default(),
            memory: Default::default(),
            offcpu_groups: HashMap::new(),
        }
    }

    /// Run until SIGTERM/SIGINT; the partial window is written on the way
    /// out.
    pub(super) async fn run(mut self) -> Result<AgentSummary, AgentError> {
        let mut signals = StopSignals::install()?;
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_drain = Instant::now();
        let mut last_scan: Option<Instant> = None;
        // Every series exists from the start (at zero), as scrapers expect.
        self.update_metrics();

        loop {
            let stop = tokio::select! {
                _ = tick.tick() => false,
                _ = signals.recv() => true,
            };
            // Lifecycle events concern pid targets (cgroup v1 only): forked
            // children are added in the kernel; exited ones leave.
            self.collector.handle_events(|_| false)?;

            if last_scan.is_none_or(|t| t.elapsed() >= self.opts.rescan) {
                last_scan = Some(Instant::now());
                self.rescan();
                self.go_scan();
                self.pidmap.retain_live();
                self.publish_live();
            }

            let now_wall = SystemTime::now();
            let window_over = now_wall >= self.window.end;
            let drain_now = stop || window_over || last_drain.elapsed() >= Duration::from_secs(1);
            // At a window's end both generations may hold its samples:
            // drain twice.
            let drains = if stop || window_over {
                2
            } else {
                usize::from(drain_now)
            };
            if drain_now {
                last_drain = Instant::now();
            }
            for _ in 0..drains {
                let drained = self.collector.drain()?;
                self.attribute(drained)?;
            }
            if drain_now && self.opts.offcpu.is_some() {
                self.note_offcpu_groups();
            }
            if self.memory.due(self.opts.memory_interval) {
                let targets = self
                    .targets
                    .iter()
                    .map(|(c, t)| (c, t.found.path.as_path()));
                self.memory.sample(targets);
            }
            if stop || window_over {
                // A stop flushes the partial window [start, now).
                let end = if stop { now_wall } else { self.window.end };
                let done = std::mem::replace(&mut self.window, Window::new(end, self.opts.window));
                let start = done.start;
                self.flush(done, end);
                self.flush_memory(start, end);
                self.departed.clear();
                // Age-based retention also when nothing new is written.
                self.shared.store.enforce_retention();
                // Release what exited processes held.
                self.collector.forget_dead();
                self.collector.go_forget_dead();
                self.collector.offcpu_forget_dead();
                self.offcpu_groups
                    .retain(|p, _| crate::cgroup::is_process(*p));
                for m in self.go.members.values_mut() {
                    m.retain(|p| crate::cgroup::is_process(*p));
                }
                let live: HashSet<&String> = self.targets.keys().collect();
                self.go.members.retain(|cid, _| live.contains(cid));
                self.go.absent.retain(|cid, _| live.contains(cid));
                self.go.errors.retain(|cid, _| live.contains(cid));
            }
            // Metrics follow the drains (once a second).
            if drain_now {
                self.update_metrics();
            }
            if stop {
                break;
            }
        }
        // --allocs-set-rate: the targets' MemProfileRate goes back to 0.
        self.collector.go_restore_rates();
        self.summary.targets_seen = self.seen.len();
        self.summary.elapsed = started.elapsed();
        Ok(self.summary)
    }

    /// cgroup v1: make the eBPF pid filter hold exactly the container's
    /// processes (children forked between scans are added by the kernel).
    fn sync_pids(&mut self, t: &mut Target) {
        let now: HashSet<u32> = crate::cgroup::procs_below(&t.found.path)
            .into_iter()
            .collect();
        let sampler = self.collector.sampler_mut();
        for pid in now.difference(&t.pids) {
            if sampler
                .add_tgid(*pid, crate::sampler::TARGET_SAMPLE)
                .is_err()
            {
                self.counters.pid_filter_overflow += 1;
            }
        }
        for pid in t.pids.difference(&now) {
            sampler.remove_tgid(*pid);
        }
        t.pids = now;
    }

    /// Walk the cgroup tree; add new selected containers to the eBPF
    /// filter, drop gone ones.
    fn rescan(&mut self) {
        let (found, stats) = targets::scan(&self.root);
        self.counters.scans += 1;
        if stats.truncated {
            self.counters.scan_truncated += 1;
        }
        let mut present: HashSet<String> = HashSet::new();
        self.counters.undecided = 0;
        for f in found {
            let Some(cid) = f.id.container_id.clone() else {
                continue;
            };
            let resolved = targets::resolve(&f, self.pods.as_ref());
            match self.opts.selection.accepts(&resolved) {
                None => {
                    self.counters.undecided += 1;
                    continue;
                }
                Some(false) => continue,
                Some(true) => {}
            }
            present.insert(cid.clone());
            if let Some(mut t) = self.targets.remove(&cid) {
                // Names can arrive after the cgroup (pod watch lag).
                t.resolved = resolved;
                if self.v1 {
                    self.sync_pids(&mut t);
                } else if t.found.cgroup_id != f.cgroup_id {
                    let sampler = self.collector.sampler_mut();
                    sampler.remove_cgroup(t.found.cgroup_id);
                    let _ = sampler.add_cgroup(f.cgroup_id);
                    t.found = f;
                }
                self.targets.insert(cid, t);
                continue;
            }
            if self.targets.len() >= MAX_TARGETS {
                self.counters.targets_overflow += 1;
                continue;
            }
            if !self.v1
                && self
                    .collector
                    .sampler_mut()
                    .add_cgroup(f.cgroup_id)
                    .is_err()
            {
                self.counters.targets_overflow += 1;
                continue;
            }
            // Snapshot its processes now, so even short profiles symbolize.
            for pid in crate::cgroup::procs_below(&f.path) {
                self.collector.snapshot(pid);
            }
            self.seen.insert(cid.clone());
            let mut t = Target {
                found: f,
                resolved,
                since: SystemTime::now(),
                pids: HashSet::new(),
            };
            if self.v1 {
                self.sync_pids(&mut t);
            }
            self.targets.insert(cid, t);
        }
        let gone: Vec<String> = self
            .targets
            .keys()
            .filter(|cid| !present.contains(*cid))
            .cloned()
            .collect();
        for cid in gone {
            if let Some(t) = self.targets.remove(&cid) {
                let sampler = self.collector.sampler_mut();
                sampler.remove_cgroup(t.found.cgroup_id);
                for pid in &t.pids {
                    sampler.remove_tgid(*pid);
                }
                // Its samples of the current window are still written.
                self.departed.insert(cid, t);
            }
        }
    }

    /// Go profiles: put every selected process of every target under the
    /// Go probes (a binary's probes are attached once, at its first
    /// process); new processes and restarted containers are picked up here.
    fn go_scan(&mut self) {
        if !self.collector.has_go() {
            return;
        }
        let sel = &self.opts.selection;
        for (cid, t) in &self.targets {
            let pids: Vec<u32> = if self.v1 {
                t.pids.iter().copied().collect()
            } else {
                crate::cgroup::procs_below(&t.found.path)
            };
            for pid in pids {
                if !sel.accepts_process(pid) {
                    continue;
                }
                match self.collector.go_add(pid) {
                    Ok(true) => {
                        let m = self.go.members.entry(cid.clone()).or_default();
                        if m.len() < MAX_GO_MEMBERS {
                            m.insert(pid);
                        } else if !m.contains(&pid) {
                            self.go.members_overflow += 1;
                        }
                    }
                    Ok(false) => {}
                    Err(e) => {
                        self.go.attach_errors += 1;
                        let why = attach_error_text(pid, &e);
                        if self.go.attach_errors <= 10 {
                            eprintln!("profiler agent: {why}");
                        }
                        self.go.errors.insert(cid.clone(), why);
                    }
                }
            }
        }
    }

    /// Write the window's Go profiles (one per type and container).
    fn flush_go(&mut self, metas: HashMap<String, (WindowMeta, ProfileMeta)>, end: SystemTime) {
        if !self.collector.has_go() {
            return;
        }
        let groups: Vec<(String, HashSet<u32>)> = metas
            .keys()
            .map(|cid| {
                (
                    cid.clone(),
                    self.go.members.get(cid).cloned().unwrap_or_default(),
                )
            })
            .collect();
        let out = self.collector.go_window(&groups, |cid| {
            metas
                .get(cid)
                .map(|(_, m)| m.clone())
                .unwrap_or_else(|| ProfileMeta {
                    frequency_hz: 0,
                    start: end,
                    duration: Duration::ZERO,
                    comments: Vec::new(),
                })
        });
        for (cid, g) in out {
            match g.absent {
                Some(why) => {
                    let why = match self.go.errors.get(&cid) {
                        Some(e) => e.clone(),
                        None => why,
                    };
                    self.go.absent.insert(cid.clone(), vec![why]);
                }
                None if g.empty.is_empty() => {
                    self.go.absent.remove(&cid);
                }
                None => {
                    self.go.absent.insert(cid.clone(), g.empty.clone());
                }
            }
            let Some((wm, _)) = metas.get(&cid) else {
                continue;
            };
            let wm = wm.clone();
            for (kind, profile, total) in g.profiles {
                self.put_window(&wm, kind, &profile, total);
            }
        }
    }

    /// offcpu: note the container of every process with off-CPU time
    /// that is not noted yet (while it still runs).
    fn note_offcpu_groups(&mut self) {
        let sel = &self.opts.selection;
        for tgid in self.collector.offcpu_tgids() {
            if self.offcpu_groups.contains_key(&tgid) {
                continue;
            }
            let Some(cid) = self.pidmap.get(tgid, sel) else {
                continue;
            };
            if self.offcpu_groups.len() < MAX_OFFCPU_GROUPS {
                self.offcpu_groups.insert(tgid, cid);
            } else {
                self.counters.offcpu_groups_overflow += 1;
            }
        }
    }

    /// Write the window's off-CPU profile of every container (empty when
    /// its threads never left the CPU).
    fn flush_offcpu(&mut self, metas: &HashMap<String, (WindowMeta, ProfileMeta)>) {
        if self.opts.offcpu.is_none() {
            return;
        }
        let every = self.opts.offcpu.unwrap_or(1);
        let pmetas: HashMap<String, ProfileMeta> = metas
            .iter()
            .map(|(cid, (_, m))| {
                let mut m = m.clone();
                m.comments.push(format!(
                    "offcpu: sched_switch, 1 switch-out in {every} sampled, values scaled by {every}"
                ));
                (cid.clone(), m)
            })
            .collect();
        self.note_offcpu_groups();
        let sel = &self.opts.selection;
        let pidmap = &mut self.pidmap;
        let noted = &self.offcpu_groups;
        let out = self.collector.offcpu_window(
            |tgid| noted.get(&tgid).cloned().or_else(|| pidmap.get(tgid, sel)),
            &pmetas,
        );
        for (cid, profile, total) in out {
            let Some((wm, _)) = metas.get(&cid) else {
                continue;
            };
            self.put_window(wm, "offcpu", &profile, total);
        }
    }

    /// Store one window profile of type `kind`, counting the outcome.
    fn put_window(
        &mut self,
        wm: &WindowMeta,
        kind: &str,
        profile: &diff::pprof::proto::Profile,
        total: u64,
    ) {
        let wm = WindowMeta {
            profile_type: kind.into(),
            samples: total,
            ..wm.clone()
        };
        match self.shared.store.put(&wm, profile) {
            Ok(_) => {
                self.counters.windows += 1;
                self.summary.windows += 1;
            }
            Err(e) => {
                self.counters.write_errors += 1;
                eprintln!(
                    "profiler agent: writing the {kind} window of {}/{}: {e}",
                    wm.target.pod, wm.target.container
                );
            }
        }
    }

    /// Move drained samples into the window's per-container aggregates.
    fn attribute(&mut self, mut drained: Vec<DrainedStack>) -> Result<(), RecordError> {
        let sel = &self.opts.selection;
        let mut pass = DrainPass::default();
        for d in drained.drain(..) {
            let Some(cid) = self.pidmap.get(d.tgid, sel) else {
                if sel.process_names.is_empty() {
                    self.counters.unattributed += d.count;
                } else {
                    self.counters.not_selected += d.count;
                }
                continue;
            };
            if !self.targets.contains_key(&cid) && !self.departed.contains_key(&cid) {
                // Sampled through a cgroup that was just dropped.
                self.counters.not_selected += d.count;
                continue;
            }
            self.collector.prepare(d.tgid, &mut pass)?;
            self.counters.samples += d.count;
            let allow_new = self.window.distinct < MAX_WINDOW_STACKS;
            if self
                .window
                .per_container
                .entry(cid)
                .or_default()
                .add_bounded(d, allow_new)
            {
                self.window.distinct += 1;
            }
        }
        self.collector.recycle(drained);
        Ok(())
    }

    /// Symbolize and store each container's aggregate of a finished window.
    fn flush(&mut self, window: Window, end: SystemTime) {
        let opts = self.opts;
        let duration = end.duration_since(window.start).unwrap_or_default();
        let (windows_before, samples_before) = (self.summary.windows, self.summary.samples);
        let started = Instant::now();
        // Every target's window identity, for the Go profiles.
        let mut go_metas: HashMap<String, (WindowMeta, ProfileMeta)> = HashMap::new();
        if self.collector.has_go() || opts.offcpu.is_some() {
            for (cid, t) in self.targets.iter().chain(self.departed.iter()) {
                let target = &t.resolved.target;
                go_metas.insert(
                    cid.clone(),
                    (
                        WindowMeta {
                            target: target.clone(),
                            profile_type: String::new(),
                            start: window.start,
                            end,
                            samples: 0,
                        },
                        ProfileMeta {
                            frequency_hz: 0,
                            start: window.start,
                            duration,
                            comments: vec![
                                format!(
                                    "profiler agent: node={} namespace={} pod={} pod_uid={} container={} container_id={}",
                                    opts.node_name.as_deref().unwrap_or(""),
                                    target.namespace,
                                    target.pod,
                                    target.pod_uid,
                                    target.container,
                                    target.container_id
                                ),
                                format!("window: {:.3}s", duration.as_secs_f64()),
                                format!("cgroup: {}", t.found.rel),
                            ],
                        },
                    ),
                );
            }
        }
        for (cid, agg) in window.per_container {
            if !opts.cpu {
                continue;
            }
            let Some(t) = self.targets.get(&cid).or_else(|| self.departed.get(&cid)) else {
                continue;
            };
            let written = agg.kept();
            self.counters.stack_table_full += agg.dropped_samples;
            let target = &t.resolved.target;
            let meta = ProfileMeta {
                frequency_hz: opts.frequency,
                start: window.start,
                duration,
                comments: vec![
                    format!(
                        "profiler agent: node={} namespace={} pod={} pod_uid={} container={} container_id={}",
                        opts.node_name.as_deref().unwrap_or(""),
                        target.namespace,
                        target.pod,
                        target.pod_uid,
                        target.container,
                        target.container_id
                    ),
                    format!(
                        "window: {:.3}s frequency={}Hz samples={written} userspace_stack_table_full={}",
                        duration.as_secs_f64(),
                        opts.frequency,
                        agg.dropped_samples
                    ),
                    format!("cgroup: {}", t.found.rel),
                ],
            };
            let wm = WindowMeta {
                target: target.clone(),
                profile_type: "cpu".into(),
                start: window.start,
                end,
                samples: written,
            };
            let profile = self.collector.build_profile(agg, &meta);
            match self.shared.store.put(&wm, &profile) {
                Ok(_) => {
                    self.counters.windows += 1;
                    self.summary.windows += 1;
                    self.summary.samples += written;
                }
                Err(e) => {
                    self.counters.write_errors += 1;
                    eprintln!(
                        "profiler agent: writing the window of {}/{}: {e}",
                        wm.target.pod, wm.target.container
                    );
                }
            }
        }
        self.flush_offcpu(&go_metas);
        self.flush_go(go_metas, end);
        eprintln!(
            "profiler agent: window {} +{:.1}s: {} container profile(s), {} samples, written in {} ms",
            humantime::format_rfc3339_seconds(window.start),
            duration.as_secs_f64(),
            self.summary.windows - windows_before,
            self.summary.samples - samples_before,
            started.elapsed().as_millis()
        );
    }

    /// Store each container's `memory` profile of a finished window.
    fn flush_memory(&mut self, start: SystemTime, end: SystemTime) {
        let targets = &self.targets;
        let memory = self.memory.take(|cid| targets.contains_key(cid));
        let duration = end.duration_since(start).unwrap_or_default();
        for (cid, usage) in memory {
            let Some(t) = self.targets.get(&cid).or_else(|| self.departed.get(&cid)) else {
                continue;
            };
            let target = &t.resolved.target;
            let comments = vec![
                format!(
                    "profiler agent: node={} namespace={} pod={} pod_uid={} container={} container_id={}",
                    self.opts.node_name.as_deref().unwrap_or(""),
                    target.namespace,
                    target.pod,
                    target.pod_uid,
                    target.container,
                    target.container_id
                ),
                format!(
                    "window: {:.3}s memory sampled every {} ms",
                    duration.as_secs_f64(),
                    self.opts.memory_interval.as_millis()
                ),
                format!("cgroup: {}", t.found.rel),
            ];
            let wm = WindowMeta {
                target: target.clone(),
                profile_type: "memory".into(),
                start,
                end,
                samples: usage.samples(),
            };
            let profile = usage.profile(start, duration, comments);
            if let Err(e) = self.shared.store.put(&wm, &profile) {
                self.counters.write_errors += 1;
                eprintln!(
                    "profiler agent: writing the memory window of {}/{}: {e}",
                    wm.target.pod, wm.target.container
                );
            }
        }
    }

    /// Publish the targets for `GET /targets`.
    fn publish_live(&self) {
        let mut v: Vec<LiveTarget> = self
            .targets
            .iter()
            .map(|(cid, t)| {
                // cgroup v1: the scan just read them for the pid filter.
                let mut pids: Vec<u32> = if t.pids.is_empty() {
                    crate::cgroup::procs_below(&t.found.path)
                } else {
                    t.pids.iter().copied().collect()
                };
                pids.sort_unstable();
                pids.truncate(1000);
                LiveTarget {
                    target: t.resolved.target.clone(),
                    pids,
                    cgroup: t.found.rel.clone(),
                    since: t.since,
                    absent: self.go.absent.get(cid).cloned().unwrap_or_default(),
                }
            })
            .collect();
        v.sort_by(|a, b| {
            (&a.target.namespace, &a.target.pod, &a.target.container).cmp(&(
                &b.target.namespace,
                &b.target.pod,
                &b.target.container,
            ))
        });
        if let Ok(mut l) = self.shared.live.write() {
            *l = v;
        }
    }

    /// Set every metric of the loop (see [`METRICS`]) from the current
    /// counters, the sampler's, the symbolizer's and the pod watch's.
    fn update_metrics(&self) {
        let sampler = self.collector.sampler();
        let k = sampler.counters();
        let c = &self.counters;
        let s = self.collector.symbolizer().stats();
        let count = |n: u64| n as f64;
        let mut rows: Vec<Row<'_>> = vec![
            (KERNEL_SAMPLES, None, count(k.get(Counter::Samples))),
            (SAMPLES, None, count(c.samples)),
            (WINDOWS_WRITTEN, None, count(c.windows)),
            (WINDOW_WRITE_ERRORS, None, count(c.write_errors)),
            (TARGETS_OVERFLOW, None, count(c.targets_overflow)),
            (CGROUP_SCANS, None, count(c.scans)),
            (CGROUP_SCANS_TRUNCATED, None, count(c.scan_truncated)),
            (TARGETS, None, self.targets.len() as f64),
            (TARGETS_UNDECIDED, None, c.undecided as f64),
            (SYM_CACHE_HITS, None, count(s.cache_hits)),
            (SYM_CACHE_MISSES, None, count(s.cache_misses)),
            (SYM_CACHE_OVERFLOW, None, count(s.cache_overflow)),
            (SYM_SNAPSHOT_ERRORS, None, count(s.snapshot_errors)),
            (SYM_PROCESSES, None, s.processes as f64),
        ];
        for counter in Counter::ALL.iter().filter(|c| c.is_loss()) {
            rows.push((
                DROPPED,
                Some(("reason", counter.name())),
                count(k.get(*counter)),
            ));
        }
        for (reason, v) in [
            ("unattributed", c.unattributed),
            ("process_name_filtered", c.not_selected),
            ("frameless_table_full", sampler.frameless_overflow),
            ("pid_memo_full", self.pidmap.overflow),
            ("pid_filter_full", c.pid_filter_overflow),
            ("userspace_stack_table_full", c.stack_table_full),
        ] {
            rows.push((DROPPED, Some(("reason", reason)), count(v)));
        }
        for (map, used, cap) in [
            (
                "target_cgroups",
                self.targets.len(),
                profiler_common::TARGET_CGROUP_ENTRIES as usize,
            ),
            (
                "frameless_ranges",
                sampler.frameless_used() as usize,
                profiler_common::FRAMELESS_ENTRIES as usize,
            ),
            (
                "frameless_index",
                self.collector.frameless_processes(),
                profiler_common::FRAMELESS_INDEX_ENTRIES as usize,
            ),
            ("pid_memo", self.pidmap.len(), targets::MAX_PIDS),
        ] {
            rows.push((MAP_ENTRIES, Some(("map", map)), used as f64));
            rows.push((MAP_CAPACITY, Some(("map", map)), cap as f64));
        }
        let go_stats = self.collector.go_stats();
        if let Some((st, kernel)) = &go_stats {
            for (map, used, cap) in [
                ("go_binaries", st.binaries, crate::go::MAX_BINARIES as u64),
                (
                    "go_processes",
                    st.processes,
                    u64::from(profiler_common::go::GO_PROC_ENTRIES),
                ),
                ("go_uprobes", st.probes, crate::go::MAX_PROBES),
                (
                    "go_stacks",
                    st.stacks,
                    u64::from(profiler_common::go::GO_FP_STACK_ENTRIES),
                ),
            ] {
                rows.push((MAP_ENTRIES, Some(("map", map)), used as f64));
                rows.push((MAP_CAPACITY, Some(("map", map)), cap as f64));
            }
            for (reason, v) in [
                ("go_binaries_full", st.binaries_overflow),
                ("go_processes_full", st.processes_overflow),
                ("go_uprobes_full", st.probes_overflow),
                ("go_container_members_full", self.go.members_overflow),
                ("go_attach_errors", self.go.attach_errors),
                ("go_not_target_entries", st.outsider_keys_removed),
            ] {
                rows.push((DROPPED, Some(("reason", reason)), count(v)));
            }
            for (name, v, _) in kernel {
                rows.push((GO_EVENTS, Some(("counter", name)), count(*v)));
            }
            rows.push((GO_DETACHED, None, count(st.binaries_detached)));
            rows.push((GO_STACKS_RELEASED, None, count(st.stacks_released)));
            let go = &self.opts.go.profiles;
            for (on, map, used, cap) in [
                (
                    go.latency,
                    "go_latency_cells",
                    st.latency_cells,
                    profiler_common::go::GO_LAT_HIST_ENTRIES,
                ),
                (
                    go.contention,
                    "contention",
                    st.contention_cells,
                    profiler_common::lock::CONTENTION_ENTRIES,
                ),
            ] {
                if on {
                    rows.push((MAP_ENTRIES, Some(("map", map)), used as f64));
                    rows.push((MAP_CAPACITY, Some(("map", map)), f64::from(cap)));
                }
            }
            for (name, v, _) in self.collector.go_lock_counters() {
                rows.push((CONTENTION_EVENTS, Some(("counter", name)), count(v)));
            }
            if self.opts.go.profiles.heap {
                rows.push((HEAP_READS, None, count(st.heap_reads)));
                rows.push((HEAP_BYTES_READ, None, count(st.heap_bytes_read)));
                rows.push((
                    DROPPED,
                    Some(("reason", "heap_reads_skipped")),
                    count(st.heap_reads_skipped),
                ));
            }
        }
        if let Some((counters, os)) = self.collector.offcpu_stats() {
            for (name, v, _) in counters {
                rows.push((OFFCPU_EVENTS, Some(("counter", name)), count(v)));
            }
            rows.push((
                DROPPED,
                Some(("reason", "offcpu_unattributed")),
                count(os.unattributed),
            ));
            rows.push((
                DROPPED,
                Some(("reason", "offcpu_process_memo_full")),
                count(c.offcpu_groups_overflow),
            ));
            rows.push((
                OFFCPU_RELEASED,
                Some(("what", "keys")),
                count(os.keys_released),
            ));
            rows.push((
                OFFCPU_RELEASED,
                Some(("what", "pending")),
                count(os.pending_released),
            ));
            rows.push((
                OFFCPU_RELEASED,
                Some(("what", "stacks")),
                count(os.stacks_released),
            ));
            rows.push((MAP_ENTRIES, Some(("map", "offcpu")), os.keys as f64));
            rows.push((
                MAP_CAPACITY,
                Some(("map", "offcpu")),
                f64::from(profiler_common::lock::OFFCPU_ENTRIES),
            ));
        }
        if let Some((ns, runs)) = sampler.sample_prog_stats() {
            rows.push((BPF_RUN_TIME, None, count(ns)));
            rows.push((BPF_RUNS, None, count(runs)));
        }
        if let Some(pods) = &self.pods {
            let w = pods.stats();
            rows.extend([
                (POD_WATCH_EVENTS, None, count(w.events)),
                (POD_WATCH_RELISTS, None, count(w.relists)),
                (POD_WATCH_ERRORS, None, count(w.errors)),
                (POD_WATCH_OVERFLOW, None, count(w.overflow)),
                (PODS_CACHED, None, pods.len() as f64),
                (
                    POD_WATCH_SYNCED,
                    None,
                    if pods.is_synced() { 1.0 } else { 0.0 },
                ),
            ]);
        }
        for (name, label, value) in rows {
            let def = METRICS
                .iter()
                .find(|d| d.name == name)
                .expect("every row's metric is in METRICS");
            let labels: &[(&'static str, &str)] = match &label {
                Some(l) => std::slice::from_ref(l),
                None => &[],
            };
            self.shared.metrics.set_def(def, labels, value);
        }
    }
}

/// One series to set: metric name, optional label, value.
type Row<'a> = (&'static str, Option<(&'static str, &'a str)>, f64);

const KERNEL_SAMPLES: &str = "profiler_agent_kernel_samples_total";
const DROPPED: &str = "profiler_agent_dropped_samples_total";
const SAMPLES: &str = "profiler_agent_samples_total";
const WINDOWS_WRITTEN: &str = "profiler_agent_windows_written_total";
const WINDOW_WRITE_ERRORS: &str = "profiler_agent_window_write_errors_total";
const TARGETS_OVERFLOW: &str = "profiler_agent_targets_overflow_total";
const CGROUP_SCANS: &str = "profiler_agent_cgroup_scans_total";
const CGROUP_SCANS_TRUNCATED: &str = "profiler_agent_cgroup_scans_truncated_total";
const TARGETS: &str = "profiler_agent_targets";
const TARGETS_UNDECIDED: &str = "profiler_agent_targets_undecided";
const MAP_ENTRIES: &str = "profiler_agent_map_entries";
const MAP_CAPACITY: &str = "profiler_agent_map_capacity";
const SYM_CACHE_HITS: &str = "profiler_agent_symbolizer_cache_hits_total";
const SYM_CACHE_MISSES: &str = "profiler_agent_symbolizer_cache_misses_total";
const SYM_CACHE_OVERFLOW: &str = "profiler_agent_symbolizer_cache_overflow_total";
const SYM_SNAPSHOT_ERRORS: &str = "profiler_agent_symbolizer_snapshot_errors_total";
const SYM_PROCESSES: &str = "profiler_agent_symbolizer_processes";
const BPF_RUN_TIME: &str = "profiler_agent_bpf_run_time_ns_total";
const BPF_RUNS: &str = "profiler_agent_bpf_runs_total";
const POD_WATCH_EVENTS: &str = "profiler_agent_pod_watch_events_total";
const POD_WATCH_RELISTS: &str = "profiler_agent_pod_watch_relists_total";
const POD_WATCH_ERRORS: &str = "profiler_agent_pod_watch_errors_total";
const POD_WATCH_OVERFLOW: &str = "profiler_agent_pod_watch_overflow_total";
const PODS_CACHED: &str = "profiler_agent_pods_cached";
const POD_WATCH_SYNCED: &str = "profiler_agent_pod_watch_synced";
const GO_EVENTS: &str = "profiler_agent_go_probe_events_total";
const GO_DETACHED: &str = "profiler_agent_go_binaries_detached_total";
const GO_STACKS_RELEASED: &str = "profiler_agent_go_stacks_released_total";
const HEAP_READS: &str = "profiler_agent_heap_reads_total";
const HEAP_BYTES_READ: &str = "profiler_agent_heap_bytes_read_total";
const OFFCPU_EVENTS: &str = "profiler_agent_offcpu_events_total";
const CONTENTION_EVENTS: &str = "profiler_agent_contention_events_total";
const OFFCPU_RELEASED: &str = "profiler_agent_offcpu_released_total";

/// Every metric the loop exports: name, kind and help, defined once
/// (docs/agent.md lists them).
const METRICS: &[MetricDef] = &[
    MetricDef::counter(
        KERNEL_SAMPLES,
        "CPU samples taken by the eBPF program (all targets).",
    ),
    MetricDef::counter(DROPPED, "Samples or events lost, by reason."),
    MetricDef::counter(SAMPLES, "Samples attributed to a profiled container."),
    MetricDef::counter(WINDOWS_WRITTEN, "Window profiles written to the store."),
    MetricDef::counter(
        WINDOW_WRITE_ERRORS,
        "Window profiles that could not be written.",
    ),
    MetricDef::counter(
        TARGETS_OVERFLOW,
        "Containers not profiled because the target limit was reached.",
    ),
    MetricDef::counter(CGROUP_SCANS, "Walks of the cgroup tree."),
    MetricDef::counter(
        CGROUP_SCANS_TRUNCATED,
        "Walks of the cgroup tree cut short by their limits.",
    ),
    MetricDef::gauge(TARGETS, "Containers profiled now."),
    MetricDef::gauge(
        TARGETS_UNDECIDED,
        "Containers waiting for pod metadata before selection.",
    ),
    MetricDef::gauge(MAP_ENTRIES, "Entries in use per bounded map."),
    MetricDef::gauge(MAP_CAPACITY, "Capacity per bounded map."),
    MetricDef::counter(
        SYM_CACHE_HITS,
        "Frame lookups served from the symbolization cache.",
    ),
    MetricDef::counter(SYM_CACHE_MISSES, "Frame lookups that had to symbolize."),
    MetricDef::counter(
        SYM_CACHE_OVERFLOW,
        "Symbolized frames not cached because the cache was full.",
    ),
    MetricDef::counter(
        SYM_SNAPSHOT_ERRORS,
        "Process mapping snapshots that failed.",
    ),
    MetricDef::gauge(SYM_PROCESSES, "Process snapshots held by the symbolizer."),
    MetricDef::counter(
        BPF_RUN_TIME,
        "In-kernel run time of the sampling program (needs kernel.bpf_stats_enabled=1).",
    ),
    MetricDef::counter(
        BPF_RUNS,
        "Runs of the sampling program (needs kernel.bpf_stats_enabled=1).",
    ),
    MetricDef::counter(
        POD_WATCH_EVENTS,
        "Pod events applied from the node-scoped watch.",
    ),
    MetricDef::counter(
        POD_WATCH_RELISTS,
        "Lists of this node's pods (the first one included).",
    ),
    MetricDef::counter(
        POD_WATCH_ERRORS,
        "Errors from the Kubernetes API (each retried with backoff).",
    ),
    MetricDef::counter(
        POD_WATCH_OVERFLOW,
        "Pods not cached because the pod limit was reached.",
    ),
    MetricDef::gauge(PODS_CACHED, "Pods of this node in the watch cache."),
    MetricDef::gauge(
        POD_WATCH_SYNCED,
        "1 once the first list of this node's pods has arrived.",
    ),
    MetricDef::counter(
        GO_EVENTS,
        "Go probe events and losses by kernel counter (calls, goroutines_created, map_full, not_target, ...).",
    ),
    MetricDef::counter(
        GO_DETACHED,
        "Binaries whose Go probes were detached because their last target process exited.",
    ),
    MetricDef::counter(
        HEAP_READS,
        "Heap profile: Go processes' memory-profile buckets read (at most 64 processes per window).",
    ),
    MetricDef::counter(
        HEAP_BYTES_READ,
        "Heap profile: bytes of buckets read from the processes' memory (at most 256 MiB per window).",
    ),
    MetricDef::counter(
        OFFCPU_EVENTS,
        "Off-CPU program events and losses by kernel counter (switches, sampled, measured, full, ...).",
    ),
    MetricDef::counter(
        CONTENTION_EVENTS,
        "Contention probe events and losses by kernel counter (ready_unmatched, parked_map_full, contention_map_full, ...).",
    ),
    MetricDef::counter(
        OFFCPU_RELEASED,
        "Off-CPU map entries (what=keys) and stacks (what=stacks) of exited processes removed.",
    ),
    MetricDef::counter(
        GO_STACKS_RELEASED,
        "Go probe stacks removed from the kernel's stack table once only exited processes had used them.",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_table_has_unique_prometheus_names() {
        let mut names = HashSet::new();
        for d in METRICS {
            assert!(names.insert(d.name), "{} twice", d.name);
            assert!(d.name.starts_with("profiler_agent_"), "{}", d.name);
            assert_eq!(
                d.name.ends_with("_total"),
                d.is_counter(),
                "{}: counters and only counters end in _total",
                d.name
            );
        }
    }

    #[test]
    fn windows_end_on_wall_clock_multiples() {
        let t = UNIX_EPOCH + Duration::from_millis(125_500);
        let w = Window::new(t, Duration::from_secs(60));
        assert_eq!(w.end, UNIX_EPOCH + Duration::from_secs(180));
    }
}
