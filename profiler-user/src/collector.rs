//! The collector shared by `profiler record` and `profiler agent`: the
//! eBPF sampler, the symbolizer, each Go binary's frameless ranges, the
//! processes being followed (and the Go probes attached to them), and the
//! bounded userspace aggregate of drained stacks.
//!
//! The callers own the policy: which targets go in the eBPF filter, how
//! often to drain, where samples go (one aggregate for `record`, one per
//! container and window for the agent) and when profiles are written.
//! The collector does the per-process work both need in the same order:
//! lifecycle events first (so a snapshot beats an exit), then per drained
//! stack a bounded re-snapshot, the frameless ranges and the Go probes of a
//! process seen for the first time.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
};

use diff::pprof::proto::Profile;
use profiler_common::{AddrRange, EventKind, FramelessSlice};
use profiler_symbolize::{Limits, ProfileMeta, RawSample, Symbolizer};

use crate::{
    error::RecordError,
    go::{GoOptions, GoSession},
    sampler::{DrainedStack, Sampler, TARGET_SAMPLE},
};

/// The kernel's Go counters: (name, value summed over CPUs, is a loss).
pub type GoCounterValues = Vec<(&'static str, u64, bool)>;

/// Distinct stacks kept in userspace before new ones are dropped (counted).
pub const MAX_STACKS: usize = 500_000;
/// Processes re-snapshotted per drain (those that produced samples).
pub const RESNAPSHOT_PER_DRAIN: usize = 64;

/// When a sampled process's memory mappings are read again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Snapshots {
    /// Every drain, for up to [`RESNAPSHOT_PER_DRAIN`] sampled processes
    /// (`record`: a dynamically linked program maps its libraries after
    /// exec, and a short-lived one may be gone by the next drain), plus
    /// every live process every tenth [`Collector::refresh_live`].
    EachDrain,
    /// The first time a process is sampled, up to
    /// [`RESNAPSHOT_PER_DRAIN`] new processes per drain (the agent: it runs
    /// for days, so it does not re-read what it already has).
    FirstSample,
}

/// Key of the userspace aggregate: (tgid, thread name, user stack, kernel
/// stack).
pub(crate) type StackKey = (u32, String, Vec<u64>, Vec<u64>);

/// Userspace aggregate of drained stacks, bounded by [`MAX_STACKS`].
#[derive(Default)]
pub struct Aggregate {
    pub(crate) stacks: HashMap<StackKey, u64>,
    /// Samples of stacks not kept (the table was full).
    pub dropped_samples: u64,
    /// Samples added, kept or not.
    pub total: u64,
}

impl Aggregate {
    /// The aggregate as the symbolizer's input.
    pub(crate) fn into_raw_samples(self) -> Vec<RawSample> {
        self.stacks
            .into_iter()
            .map(|((tgid, comm, user, kernel), count)| RawSample {
                tgid,
                tid: tgid,
                comm,
                user,
                kernel,
                count,
            })
            .collect()
    }

    /// Samples kept (added minus dropped).
    pub fn kept(&self) -> u64 {
        self.total - self.dropped_samples
    }

    /// Distinct processes among the kept stacks.
    pub fn processes(&self) -> usize {
        self.stacks
            .keys()
            .map(|k| k.0)
            .collect::<HashSet<_>>()
            .len()
    }

    /// Adds `d` (a new stack is kept while below [`MAX_STACKS`]).
    pub fn add(&mut self, d: DrainedStack) {
        self.add_bounded(d, true);
    }

    /// Adds `d`; a stack not seen before is kept only when `allow_new`
    /// (and below [`MAX_STACKS`]), else its samples are counted as
    /// dropped. Returns whether a new stack was kept.
    pub fn add_bounded(&mut self, d: DrainedStack, allow_new: bool) -> bool {
        self.total += d.count;
        let key = (d.tgid, d.comm, d.user, d.kernel);
        if let Some(c) = self.stacks.get_mut(&key) {
            *c += d.count;
            false
        } else if allow_new && self.stacks.len() < MAX_STACKS {
            self.stacks.insert(key, d.count);
            true
        } else {
            self.dropped_samples += d.count;
            false
        }
    }
}

/// Loads each Go binary's frameless ranges once and points every process
/// running it at them.
#[derive(Default)]
struct FramelessLoader {
    /// (exe path, device, inode) -> stored slice (None: no ranges / not Go).
    cache: HashMap<(String, u64, u64), Option<FramelessSlice>>,
    loaded: HashSet<u32>,
    failures: u64,
}

impl FramelessLoader {
    fn load(&mut self, sampler: &mut Sampler, symbolizer: &Symbolizer, tgid: u32) {
        use std::os::unix::fs::MetadataExt as _;
        // Only `cpu_sample` reads the ranges: without it there is nothing
        // to load them for.
        if !sampler.samples_cpu() {
            return;
        }
        self.loaded.insert(tgid);
        let Ok(exe) = std::fs::read_link(format!("/proc/{tgid}/exe")) else {
            return;
        };
        let Ok(meta) = std::fs::metadata(format!("/proc/{tgid}/exe")) else {
            return;
        };
        let exe = exe.to_string_lossy().into_owned();
        let key = (exe.clone(), meta.dev(), meta.ino());
        let slice = match self.cache.get(&key) {
            Some(s) => *s,
            None => {
                let slice = self.store(sampler, tgid);
                self.cache.insert(key, slice);
                slice
            }
        };
        let Some(mut slice) = slice else { return };
        let mappings = symbolizer.process_mappings(tgid);
        let Some(text) = mappings.iter().find(|m| m.path == exe) else {
            return;
        };
        slice.bias = text
            .start
            .wrapping_sub(text.file_offset)
            .wrapping_sub(text.delta);
        if sampler.set_frameless(tgid, slice).is_err() {
            self.failures += 1;
        }
    }

    /// Computes and stores the ranges of `tgid`'s binary (None: not Go, no
    /// ranges, or the table is full).
    fn store(&mut self, sampler: &mut Sampler, tgid: u32) -> Option<FramelessSlice> {
        let path = format!("/proc/{tgid}/exe");
        let path = Path::new(&path);
        if !profiler_symbolize::is_go_binary(path) {
            return None;
        }
        match profiler_symbolize::frameless_ranges(path) {
            Ok(r) => {
                let ranges: Vec<AddrRange> = r
                    .iter()
                    .map(|r| AddrRange {
                        start: r.start,
                        end: r.end,
                    })
                    .collect();
                sampler.store_frameless(&ranges).unwrap_or_else(|_| {
                    self.failures += 1;
                    None
                })
            }
            Err(_) => {
                self.failures += 1;
                None
            }
        }
    }
}

/// SIGTERM and SIGINT as one stream: both stop a recording or the agent
/// (the profile or the partial window is written). Installed once, so a
/// signal that arrives while a drain runs is seen at the next `select!`.
pub struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Install the handlers (inside a tokio runtime).
    pub fn install() -> Result<Self, RecordError> {
        use tokio::signal::unix::{signal, SignalKind};
        let handler = |kind: SignalKind, name: &'static str| {
            signal(kind).map_err(|e| RecordError::Signal {
                signal: name,
                source: e,
            })
        };
        Ok(StopSignals {
            term: handler(SignalKind::terminate(), "SIGTERM")?,
            int: handler(SignalKind::interrupt(), "SIGINT")?,
        })
    }

    /// Wait for the next SIGTERM or SIGINT.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Per-drain bookkeeping of [`Collector::prepare`]: which processes were
/// re-snapshotted in this drain (at most [`RESNAPSHOT_PER_DRAIN`]).
#[derive(Default)]
pub struct DrainPass {
    fresh: HashSet<u32>,
}

fn alive(tgid: u32) -> bool {
    Path::new(&format!("/proc/{tgid}")).exists()
}

/// The sampler, the symbolizer and the processes they follow.
pub struct Collector {
    sampler: Sampler,
    symbolizer: Symbolizer,
    frameless: FramelessLoader,
    /// Processes seen (live ones only after a sweep).
    known: HashSet<u32>,
    go: Option<GoSession>,
    offcpu: Option<crate::offcpu::OffCpu>,
    snapshots: Snapshots,
    drained: Vec<DrainedStack>,
    drains: u32,
}

impl Collector {
    /// Load the sampler at `frequency` Hz (`None`: no CPU sampling, the
    /// eBPF object and tracepoints only; see [`Sampler::start_with_log`]),
    /// with the target filter on (`filtered`) or off (whole system), and
    /// the Go probes `go` asks for; with `ebpf_log`, the programs' rare
    /// events go to stderr.
    pub fn start(
        frequency: Option<u64>,
        filtered: bool,
        go: Option<&GoOptions>,
        snapshots: Snapshots,
        ebpf_log: bool,
    ) -> Result<Self, RecordError> {
        let mut sampler = Sampler::start_with_log(frequency, ebpf_log)?;
        sampler.set_filter(filtered)?;
        let go = match go.filter(|g| g.profiles.any()) {
            Some(g) => Some(GoSession::start(&mut sampler, g)?),
            None => None,
        };
        Ok(Self {
            sampler,
            symbolizer: Symbolizer::new(Limits::default()),
            frameless: FramelessLoader::default(),
            known: HashSet::new(),
            go,
            offcpu: None,
            snapshots,
            drained: Vec::new(),
            drains: 0,
        })
    }

    /// The sampler (target filter, counters).
    pub fn sampler(&self) -> &Sampler {
        &self.sampler
    }

    /// The sampler, mutably (targets in and out of the filter).
    pub fn sampler_mut(&mut self) -> &mut Sampler {
        &mut self.sampler
    }

    /// The symbolizer (statistics).
    pub fn symbolizer(&self) -> &Symbolizer {
        &self.symbolizer
    }

    /// Processes pointed at frameless ranges (or examined for them).
    pub fn frameless_processes(&self) -> usize {
        self.frameless.loaded.len()
    }

    /// Frameless ranges that could not be computed or stored.
    pub fn frameless_failures(&self) -> u64 {
        self.frameless.failures
    }

    /// Put `pid` in the target filter and follow it.
    pub fn add_pid(&mut self, pid: u32) -> Result<(), RecordError> {
        self.sampler.add_tgid(pid, TARGET_SAMPLE)?;
        self.track(pid)
    }

    /// Follow `pid`: snapshot its mappings, load its frameless ranges and
    /// attach the Go probes.
    pub fn track(&mut self, pid: u32) -> Result<(), RecordError> {
        let _ = self.symbolizer.snapshot_process(pid);
        self.frameless
            .load(&mut self.sampler, &self.symbolizer, pid);
        self.known.insert(pid);
        if let Some(g) = self.go.as_mut() {
            g.add_process(&mut self.sampler, pid)?;
        }
        Ok(())
    }

    /// Follow every process of `pids` not followed yet ([`Self::track`]),
    /// except the profiler itself and kernel threads (no executable).
    /// Without CPU sampling nothing else finds
    /// a process that entered a target cgroup without an `exec` (or, in
    /// whole-system mode, any process): this is how `record` finds them
    /// for the Go probes and the symbolizer.
    pub fn track_new(&mut self, pids: impl IntoIterator<Item = u32>) -> Result<(), RecordError> {
        let me = std::process::id();
        for pid in pids {
            if pid == me || self.known.contains(&pid) {
                continue;
            }
            if std::fs::read_link(format!("/proc/{pid}/exe")).is_err() {
                continue;
            }
            self.track(pid)?;
        }
        Ok(())
    }

    /// Follow `pid`, a process held before `exec` of `exe` (see
    /// [`crate::launch`]): put it in the target filter and attach the Go
    /// probes to `exe`'s file now, so both see the program's first
    /// instruction. Its mappings and frameless ranges are read after the
    /// exec (the exec event, or [`Self::exec_done`]).
    pub fn track_held(&mut self, pid: u32, exe: &Path) -> Result<(), RecordError> {
        self.sampler.add_tgid(pid, TARGET_SAMPLE)?;
        self.known.insert(pid);
        if let Some(g) = self.go.as_mut() {
            g.add_held_process(&mut self.sampler, pid, exe)?;
        }
        Ok(())
    }

    /// A process given to [`Self::track_held`] has exec'd: snapshot it,
    /// load its frameless ranges and let the Go probes read its runtime
    /// addresses. Harmless for any other process.
    pub fn exec_done(&mut self, pid: u32) {
        let _ = self.symbolizer.snapshot_process(pid);
        self.frameless.loaded.remove(&pid);
        self.frameless
            .load(&mut self.sampler, &self.symbolizer, pid);
        if let Some(g) = self.go.as_mut() {
            g.exec_done(pid);
        }
    }

    /// Snapshot `pid` and load its frameless ranges (no Go probes, not
    /// remembered as followed): a container's processes when it is found.
    pub fn snapshot(&mut self, pid: u32) {
        let _ = self.symbolizer.snapshot_process(pid);
        self.frameless
            .load(&mut self.sampler, &self.symbolizer, pid);
    }

    /// Process lifecycle events of the targets: a forked thread leaves the
    /// filter, a new process is snapshotted, an exec'd one snapshotted with
    /// its new binary's frameless ranges and Go probes, an exiting one
    /// snapshotted (its maps may still be readable) and, unless `keep`
    /// says so, removed from the filter.
    pub fn handle_events(&mut self, keep: impl Fn(u32) -> bool) -> Result<(), RecordError> {
        for (kind, tgid) in self.sampler.events() {
            match kind {
                EventKind::Fork => {
                    if !crate::cgroup::is_process(tgid) {
                        self.sampler.remove_tgid(tgid);
                        continue;
                    }
                    let _ = self.symbolizer.snapshot_process(tgid);
                    self.known.insert(tgid);
                }
                EventKind::Exec => {
                    self.frameless.loaded.remove(&tgid);
                    self.track(tgid)?;
                    if let Some(g) = self.go.as_mut() {
                        g.exec_done(tgid);
                    }
                }
                EventKind::Exit => {
                    let _ = self.symbolizer.snapshot_process(tgid);
                    if !keep(tgid) {
                        self.sampler.remove_tgid(tgid);
                    }
                }
            }
        }
        Ok(())
    }

    /// Periodic work of the Go probes (live-count series, rate upkeep).
    pub fn tick(&mut self) {
        if let Some(g) = self.go.as_mut() {
            g.tick(&mut self.sampler);
        }
    }

    /// Drain the kernel's idle generation; the stacks are returned for the
    /// caller to attribute, with [`Self::prepare`] called on those it keeps.
    /// Empty without CPU sampling.
    pub fn drain(&mut self) -> Result<Vec<DrainedStack>, RecordError> {
        self.drains = self.drains.wrapping_add(1);
        let mut out = std::mem::take(&mut self.drained);
        if !self.sampler.samples_cpu() {
            // Nothing writes the sample maps.
            return Ok(out);
        }
        self.sampler.drain(&mut out)?;
        Ok(out)
    }

    /// Give back a drained buffer (emptied) for the next drain.
    pub fn recycle(&mut self, mut buf: Vec<DrainedStack>) {
        buf.clear();
        self.drained = buf;
    }

    /// Make a sampled process symbolizable: Go probes the first time it is
    /// seen (when Go profiles are on), a snapshot of its mappings per the
    /// [`Snapshots`] policy (bounded per drain by `pass`), and its
    /// frameless ranges.
    pub fn prepare(&mut self, tgid: u32, pass: &mut DrainPass) -> Result<(), RecordError> {
        let first = !self.frameless.loaded.contains(&tgid);
        match self.snapshots {
            Snapshots::EachDrain => {
                if self.known.insert(tgid) {
                    if let Some(g) = self.go.as_mut() {
                        g.add_process(&mut self.sampler, tgid)?;
                    }
                }
                if pass.fresh.len() < RESNAPSHOT_PER_DRAIN && pass.fresh.insert(tgid) {
                    let _ = self.symbolizer.snapshot_process(tgid);
                }
                if first {
                    self.frameless
                        .load(&mut self.sampler, &self.symbolizer, tgid);
                }
            }
            Snapshots::FirstSample => {
                if first && pass.fresh.len() < RESNAPSHOT_PER_DRAIN && pass.fresh.insert(tgid) {
                    self.snapshot(tgid);
                }
            }
        }
        Ok(())
    }

    /// [`Snapshots::EachDrain`] upkeep, every tenth drain: re-snapshot live
    /// processes (dlopen, late maps) and forget gone ones, so these sets
    /// hold live processes only (the symbolizer keeps their snapshots,
    /// bounded by its own limits, for the profile written at the end).
    pub fn refresh_live(&mut self) {
        if !self.drains.is_multiple_of(10) {
            return;
        }
        let symbolizer = &mut self.symbolizer;
        self.known.retain(|&tgid| {
            let alive = alive(tgid);
            if alive {
                let _ = symbolizer.snapshot_process(tgid);
            }
            alive
        });
        let known = &self.known;
        self.frameless.loaded.retain(|tgid| known.contains(tgid));
    }

    /// Release what exited processes held (their last samples were just
    /// written): their frameless pointers in the kernel and their
    /// snapshots, and binaries nobody maps any more.
    pub fn forget_dead(&mut self) {
        let dead: Vec<u32> = self
            .frameless
            .loaded
            .iter()
            .copied()
            .filter(|&pid| !alive(pid))
            .collect();
        for tgid in dead {
            self.sampler.clear_frameless(tgid);
            self.frameless.loaded.remove(&tgid);
        }
        self.known.retain(|&tgid| alive(tgid));
        let gone: Vec<u32> = self
            .symbolizer
            .snapshotted_pids()
            .into_iter()
            .filter(|&pid| !alive(pid))
            .collect();
        for pid in &gone {
            self.symbolizer.forget_process(*pid);
        }
        if !gone.is_empty() {
            self.symbolizer.prune();
        }
    }

    /// The last drains of a recording: CPU sampling is stopped first, so
    /// the counters and the drained counts describe the same runs; then both
    /// generations (which may hold samples) go into `agg`, a process seen for
    /// the first time snapshotted (no probes any more).
    pub fn drain_last(&mut self, agg: &mut Aggregate) -> Result<(), RecordError> {
        self.sampler.stop();
        for _ in 0..2 {
            let mut buf = self.drain()?;
            for d in buf.drain(..) {
                if self.known.insert(d.tgid) {
                    let _ = self.symbolizer.snapshot_process(d.tgid);
                }
                agg.add(d);
            }
            self.recycle(buf);
        }
        Ok(())
    }

    /// Read the Go probes' maps (still attached) and build their profiles:
    /// (type, profile, summary lines). Empty without Go profiles.
    pub fn finish_go(&mut self, meta: &ProfileMeta) -> Vec<(String, Profile, Vec<String>)> {
        match self.go.take() {
            Some(g) => g.finish(&mut self.sampler, &mut self.symbolizer, meta),
            None => Vec::new(),
        }
    }

    /// The agent's mode of the Go probes (probes once per binary for
    /// every process running it, filtered in the kernel); no-op without
    /// Go profiles.
    pub fn go_shared(&mut self) {
        if let Some(g) = self.go.as_mut() {
            g.set_shared();
        }
    }

    /// Whether Go profiles are on.
    pub fn has_go(&self) -> bool {
        self.go.is_some()
    }

    /// Add a process to the Go probes (a no-op for one already added or
    /// not Go) and snapshot its mappings when it is Go.
    pub fn go_add(&mut self, tgid: u32) -> Result<bool, RecordError> {
        let Some(g) = self.go.as_mut() else {
            return Ok(false);
        };
        if g.is_go_process(tgid) {
            return Ok(true);
        }
        g.add_process(&mut self.sampler, tgid)?;
        let is_go = g.is_go_process(tgid);
        if is_go {
            let _ = self.symbolizer.snapshot_process(tgid);
        }
        Ok(is_go)
    }

    /// The window's Go profiles per group of processes (agent mode; see
    /// [`GoSession::window`]).
    pub fn go_window(
        &mut self,
        groups: &[(String, HashSet<u32>)],
        meta: impl Fn(&str) -> ProfileMeta,
    ) -> Vec<(String, crate::go::GroupProfiles)> {
        match self.go.as_mut() {
            Some(g) => g.window(&mut self.symbolizer, groups, meta),
            None => Vec::new(),
        }
    }

    /// Undo `--allocs-set-rate` in the targets (at the agent's shutdown).
    pub fn go_restore_rates(&mut self) {
        if let Some(g) = self.go.as_ref() {
            g.restore_alloc_rates();
        }
    }

    /// Agent mode: release exited processes' Go state and detach the probes
    /// of binaries no target runs any more.
    pub fn go_forget_dead(&mut self) {
        if let Some(g) = self.go.as_mut() {
            g.forget_dead_shared(&mut self.sampler);
        }
    }

    /// The per-binary probes' counters and the kernel's Go counters
    /// (name, value, is a loss); None without Go profiles.
    pub fn go_stats(&self) -> Option<(crate::go::SharedStats, GoCounterValues)> {
        self.go
            .as_ref()
            .map(|g| (g.shared_stats(), g.counter_values()))
    }

    /// The contention probes' kernel counters (name, value, is a loss);
    /// empty without the contention type.
    pub fn go_lock_counters(&self) -> GoCounterValues {
        self.go
            .as_ref()
            .map(|g| g.lock_counter_values())
            .unwrap_or_default()
    }

    /// Start the off-CPU profile: `sched_switch` sampling one switch-out
    /// of a target thread in `every` ([`crate::offcpu::OffCpu`]).
    pub fn start_offcpu(&mut self, every: u32) -> Result<(), RecordError> {
        self.offcpu = Some(crate::offcpu::OffCpu::start(&mut self.sampler, every)?);
        Ok(())
    }

    /// Read the off-CPU maps (program still attached) and build its
    /// profile: (type, profile, summary lines). None without `start_offcpu`.
    pub fn finish_offcpu(&mut self, meta: &ProfileMeta) -> Option<(String, Profile, Vec<String>)> {
        let o = self.offcpu.take()?;
        Some(o.finish(&mut self.symbolizer, meta))
    }

    /// Agent mode: the window's off-CPU profile per group (see
    /// [`crate::offcpu::OffCpu::window`]); empty without `start_offcpu`.
    pub fn offcpu_window(
        &mut self,
        group_of: impl FnMut(u32) -> Option<String>,
        metas: &HashMap<String, ProfileMeta>,
    ) -> Vec<(String, Profile, u64)> {
        match self.offcpu.as_mut() {
            Some(o) => o.window(&mut self.symbolizer, group_of, metas),
            None => Vec::new(),
        }
    }

    /// The processes with off-CPU time recorded (empty without
    /// `start_offcpu`).
    pub fn offcpu_tgids(&self) -> HashSet<u32> {
        self.offcpu.as_ref().map(|o| o.tgids()).unwrap_or_default()
    }

    /// Agent mode: release the off-CPU entries of exited processes.
    pub fn offcpu_forget_dead(&mut self) {
        if let Some(o) = self.offcpu.as_mut() {
            o.forget_dead();
        }
    }

    /// Agent mode: the off-CPU counters (name, value, is a loss) and map
    /// bookkeeping; None without `start_offcpu`.
    pub fn offcpu_stats(&self) -> Option<(GoCounterValues, crate::offcpu::OffCpuWindowStats)> {
        self.offcpu.as_ref().map(|o| {
            (
                o.counters()
                    .into_iter()
                    .map(|(c, v)| (c.name(), v, c.is_loss()))
                    .collect(),
                o.window_stats(),
            )
        })
    }

    /// Symbolize an aggregate into a CPU profile.
    pub fn build_profile(&mut self, agg: Aggregate, meta: &ProfileMeta) -> Profile {
        self.symbolizer.build_profile(&agg.into_raw_samples(), meta)
    }

    /// Stop sampling (drops the sampler: programs detached, maps freed)
    /// and keep the symbolizer for the profiles still to write.
    pub fn into_symbolizer(self) -> Symbolizer {
        self.symbolizer
    }
}
