//! The `offcpu` profile: how long the targets' threads are off the CPU
//! (blocked in a system call, sleeping, waiting for a lock in the kernel,
//! or runnable but preempted), by user stack, from the `sched:sched_switch`
//! tracepoint (`offcpu_switch` in `profiler-ebpf/src/lock.rs`).
//!
//! Sampled, not recorded: one switch-out of a target thread in `every`
//! (chosen by `bpf_get_prandom_u32`) walks the user stack and notes the
//! time; when that thread is switched back in, the interval is added to its
//! stack. Values are scaled by `every`, so totals estimate the whole
//! off-CPU time (sample type `offcpu/nanoseconds`, plus `switches/count`).
//! A switch that is not sampled costs the filter check and one hash lookup.
//!
//! A Go thread's stack ends at `runtime.mcall` or `runtime.mstart`
//! ([`cut_at_go_thread_root`]): past them the frame-pointer chain leads
//! into stacks the thread no longer runs (see [`GO_THREAD_ROOTS`]), and an
//! idle scheduler thread's sleep would be counted under a goroutine's
//! functions.

use std::{collections::HashMap, time::Instant};

use aya::maps::{Array, HashMap as AyaHashMap, MapData, PerCpuArray};
use aya::programs::TracePoint;
use diff::pprof::proto::Profile;
use profiler_common::{
    lock::{LockCounter, OffCpuConfig, OffCpuKey, OffCpuStart, WaitTotals},
    FpStack,
};
use profiler_symbolize::{ProfileMeta, ProfileShape, ResolvedFrame, Symbolizer};

use crate::{error::RecordError, sampler::Sampler};

use crate::go::take_map as take;

/// The off-CPU program of one recording and its maps.
pub struct OffCpu {
    every: u32,
    totals: AyaHashMap<MapData, OffCpuKey, WaitTotals>,
    stacks: AyaHashMap<MapData, u64, FpStack>,
    pending: AyaHashMap<MapData, u32, OffCpuStart>,
    counters: PerCpuArray<MapData, u64>,
    prog_fd: i32,
    started: Instant,
    /// Agent windows: the cumulative totals at the previous window.
    prev: HashMap<OffCpuKey, (u64, u64)>,
    /// Agent windows: what was done with the map entries.
    stats: OffCpuWindowStats,
}

/// The agent's bookkeeping of the off-CPU map (exported in `/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffCpuWindowStats {
    /// Sampled off-CPU intervals (unscaled) of processes in no profiled
    /// container when their window was cut (not written).
    pub unattributed: u64,
    /// Entries of exited processes removed from `OFFCPU`.
    pub keys_released: u64,
    /// Stacks removed from `OFFCPU_STACKS` once only exited processes used them.
    pub stacks_released: u64,
    /// Entries in `OFFCPU` at the last window.
    pub keys: u64,
    /// Pending intervals of threads that exited off the CPU, removed from
    /// `OFFCPU_PENDING`.
    pub pending_released: u64,
}

/// One row of an off-CPU profile: process, user frames, sampled
/// intervals, their summed ns (unscaled).
type OffCpuRow = (u32, Vec<u64>, u64, u64);

impl OffCpu {
    /// Load and attach `offcpu_switch` to `sched/sched_switch`, sampling one
    /// switch-out of a target thread in `every` (the sampler's target
    /// filter decides what a target is).
    pub fn start(sampler: &mut Sampler, every: u32) -> Result<Self, RecordError> {
        let next_pid = crate::sampler::tracepoint_offset("sched", "sched_switch", "next_pid")
            .ok_or_else(|| {
                RecordError::missing(
                    "the sched/sched_switch tracepoint format (no next_pid field in tracefs)",
                )
            })?;
        let mut config: Array<MapData, OffCpuConfig> = take(sampler, "OFFCPU_CONFIG")?;
        config
            .set(
                0,
                OffCpuConfig {
                    every: every.max(1),
                    next_pid_offset: next_pid as u32,
                },
                0,
            )
            .map_err(|e| RecordError::ebpf("OFFCPU_CONFIG", e))?;
        let name = "offcpu_switch";
        let tp: &mut TracePoint = sampler
            .ebpf_mut()
            .program_mut(name)
            .ok_or_else(|| RecordError::missing(format!("program {name} missing")))?
            .try_into()
            .map_err(|e| RecordError::ebpf(name, e))?;
        tp.load().map_err(|e| RecordError::from_program(name, e))?;
        let prog_fd = {
            use std::os::fd::{AsFd as _, AsRawFd as _};
            tp.fd()
                .map(|fd| fd.as_fd().as_raw_fd())
                .map_err(|e| RecordError::ebpf(name, e))?
        };
        tp.attach("sched", "sched_switch")
            .map_err(|e| RecordError::ebpf(format!("attach {name} to sched/sched_switch"), e))?;
        Ok(Self {
            every: every.max(1),
            totals: take(sampler, "OFFCPU")?,
            stacks: take(sampler, "OFFCPU_STACKS")?,
            pending: take(sampler, "OFFCPU_PENDING")?,
            counters: take(sampler, "OFFCPU_COUNTERS")?,
            prog_fd,
            started: Instant::now(),
            prev: HashMap::new(),
            stats: OffCpuWindowStats::default(),
        })
    }

    /// In-kernel cost of `offcpu_switch`: (`run_time_ns`, `run_cnt`) from
    /// its fdinfo; zeros unless `kernel.bpf_stats_enabled=1`.
    pub fn prog_stats(&self) -> (u64, u64) {
        let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", self.prog_fd))
            .unwrap_or_default();
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim_start_matches(':').trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        (field("run_time_ns"), field("run_cnt"))
    }

    /// The off-CPU counters, by name.
    pub fn counters(&self) -> Vec<(LockCounter, u64)> {
        LockCounter::ALL
            .iter()
            .filter(|c| c.is_offcpu())
            .map(|c| (*c, crate::go::counter_sum(&self.counters, *c as u32)))
            .collect()
    }

    /// The user frames of a stack hash (0: none), through `cache`.
    fn frames(&self, hash: u64, cache: &mut HashMap<u64, Vec<u64>>) -> Vec<u64> {
        if hash == 0 {
            return Vec::new();
        }
        cache
            .entry(hash)
            .or_insert_with(|| {
                self.stacks
                    .get(&hash, 0)
                    .map(|s| s.frames[..(s.len as usize).min(s.frames.len())].to_vec())
                    .unwrap_or_default()
            })
            .clone()
    }

    /// The map's cumulative totals now: (key, intervals, ns).
    fn read_totals(&self) -> Vec<(OffCpuKey, u64, u64)> {
        self.totals
            .keys()
            .filter_map(Result::ok)
            .filter_map(|k| self.totals.get(&k, 0).ok().map(|v| (k, v.count, v.nanos)))
            .collect()
    }

    /// Read the maps (program still attached) and build the profile:
    /// ("offcpu", profile, summary lines). Threads still off the CPU at
    /// the end are not counted.
    pub fn finish(
        self,
        symbolizer: &mut Symbolizer,
        meta: &ProfileMeta,
    ) -> (String, Profile, Vec<String>) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let mut cache = HashMap::new();
        let rows: Vec<OffCpuRow> = self
            .read_totals()
            .into_iter()
            .map(|(k, n, ns)| (k.tgid, self.frames(k.stack_hash, &mut cache), n, ns))
            .collect();
        for tgid in rows
            .iter()
            .map(|r| r.0)
            .collect::<std::collections::HashSet<_>>()
        {
            if std::path::Path::new(&format!("/proc/{tgid}")).exists() {
                let _ = symbolizer.snapshot_process(tgid);
            }
        }
        let (p, summary) = self.profile_of(symbolizer, rows, meta, elapsed);
        ("offcpu".to_string(), p, summary)
    }

    /// Agent mode: one window's off-CPU profile per group (a container).
    /// The window's part of the cumulative map is cut by difference;
    /// `group_of(tgid)` names a process's group (None: in no profiled
    /// group, counted in [`OffCpuWindowStats::unattributed`]); every group
    /// `meta` knows gets a profile, empty when its threads were never off
    /// the CPU. Returns (group, profile, sampled intervals).
    pub fn window(
        &mut self,
        symbolizer: &mut Symbolizer,
        mut group_of: impl FnMut(u32) -> Option<String>,
        metas: &HashMap<String, ProfileMeta>,
    ) -> Vec<(String, Profile, u64)> {
        let now = self.read_totals();
        self.stats.keys = now.len() as u64;
        let mut next = HashMap::with_capacity(now.len());
        let mut cache = HashMap::new();
        let mut by_group: HashMap<String, Vec<OffCpuRow>> = HashMap::new();
        for (k, n, ns) in now {
            let (pn, pns) = self.prev.get(&k).copied().unwrap_or((0, 0));
            next.insert(k, (n, ns));
            let (dn, dns) = (n.saturating_sub(pn), ns.saturating_sub(pns));
            if dn == 0 && dns == 0 {
                continue;
            }
            match group_of(k.tgid).filter(|g| metas.contains_key(g)) {
                Some(g) => {
                    let frames = self.frames(k.stack_hash, &mut cache);
                    by_group
                        .entry(g)
                        .or_default()
                        .push((k.tgid, frames, dn, dns));
                }
                None => self.stats.unattributed += dn,
            }
        }
        self.prev = next;
        let tgids: std::collections::HashSet<u32> =
            by_group.values().flatten().map(|r| r.0).collect();
        for tgid in tgids {
            if std::path::Path::new(&format!("/proc/{tgid}")).exists() {
                let _ = symbolizer.snapshot_process(tgid);
            }
        }
        let mut out = Vec::new();
        for (g, meta) in metas {
            let rows = by_group.remove(g).unwrap_or_default();
            let n = rows.iter().map(|r| r.2).sum();
            let secs = meta.duration.as_secs_f64();
            let (p, _) = self.profile_of(symbolizer, rows, meta, secs);
            out.push((g.clone(), p, n));
        }
        out
    }

    /// Agent mode: remove the entries of processes that exited (after
    /// their last window was cut) and the stacks only they used.
    pub fn forget_dead(&mut self) {
        let alive = |tgid: u32| std::path::Path::new(&format!("/proc/{tgid}")).exists();
        // A thread sampled at its last switch-out (it exited) never
        // switches back in: its pending entry goes here.
        let gone: Vec<u32> = self
            .pending
            .keys()
            .filter_map(Result::ok)
            .filter(|tid| !alive(*tid))
            .collect();
        for tid in gone {
            if self.pending.remove(&tid).is_ok() {
                self.stats.pending_released += 1;
            }
        }
        let keys: Vec<OffCpuKey> = self.totals.keys().filter_map(Result::ok).collect();
        let (dead, live): (Vec<OffCpuKey>, Vec<OffCpuKey>) =
            keys.into_iter().partition(|k| !alive(k.tgid));
        if dead.is_empty() {
            return;
        }
        let mut used: std::collections::HashSet<u64> = live.iter().map(|k| k.stack_hash).collect();
        // A sampled thread still off the CPU refers to its stack too.
        for t in self.pending.keys().filter_map(Result::ok) {
            if let Ok(v) = self.pending.get(&t, 0) {
                used.insert(v.key.stack_hash);
            }
        }
        for k in &dead {
            if self.totals.remove(k).is_ok() {
                self.stats.keys_released += 1;
            }
            self.prev.remove(k);
            if k.stack_hash != 0
                && !used.contains(&k.stack_hash)
                && self.stacks.remove(&k.stack_hash).is_ok()
            {
                used.insert(k.stack_hash);
                self.stats.stacks_released += 1;
            }
        }
    }

    /// The processes with off-CPU time in the map now.
    pub fn tgids(&self) -> std::collections::HashSet<u32> {
        self.totals
            .keys()
            .filter_map(Result::ok)
            .map(|k| k.tgid)
            .collect()
    }

    /// Agent mode: the map bookkeeping so far.
    pub fn window_stats(&self) -> OffCpuWindowStats {
        self.stats
    }

    /// The profile of `rows` (values scaled by the sampling rate) and its
    /// summary lines, for a recording or window of `elapsed` seconds.
    fn profile_of(
        &self,
        symbolizer: &mut Symbolizer,
        rows: Vec<OffCpuRow>,
        meta: &ProfileMeta,
        elapsed: f64,
    ) -> (Profile, Vec<String>) {
        let every = u64::from(self.every);
        let (mut intervals, mut nanos) = (0u64, 0u64);
        let rows: Vec<crate::go::Row> = rows
            .into_iter()
            .map(|(tgid, frames, count, ns)| {
                intervals += count;
                nanos += ns;
                let values = vec![
                    count.saturating_mul(every) as i64,
                    ns.saturating_mul(every) as i64,
                ];
                (frames, tgid, values, vec![])
            })
            .collect();
        let (mappings, mut samples) = crate::go::symbolize_rows(symbolizer, rows);
        // Stacks equal once cut are merged by the profile builder.
        for s in &mut samples {
            cut_at_go_thread_root(&mut s.frames);
        }
        let counters = self.counters();
        let counter_line = format!(
            "offcpu counters: {}",
            counters
                .iter()
                .map(|(c, v)| format!("{}={v}", c.name()))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let line = format!(
            "offcpu: 1 switch in {every} sampled; {intervals} sampled intervals, {:.3} s off the CPU (estimated {:.3} s) in {elapsed:.1} s",
            nanos as f64 / 1e9,
            (nanos * every) as f64 / 1e9
        );
        let (ns, runs) = self.prog_stats();
        let mut comments = meta.comments.clone();
        comments.push(counter_line.clone());
        comments.push(line.clone());
        let mut summary = vec![line, counter_line.clone()];
        if let Some(per_run) = ns.checked_div(runs) {
            let cost = format!(
                "offcpu program cost (bpf_stats): offcpu_switch runs={runs} ns_per_run={per_run}"
            );
            comments.push(cost.clone());
            summary.push(cost);
        }
        let shape = ProfileShape::new(
            &[("switches", "count"), ("offcpu", "nanoseconds")],
            ("offcpu", "nanoseconds"),
            1,
            Some("offcpu"),
        );
        let meta = ProfileMeta {
            comments,
            ..meta.clone()
        };
        let p = profiler_symbolize::build_profile(&mappings, &samples, &shape, &meta);
        (p, summary)
    }
}

/// Why off-CPU stacks end at [`GO_THREAD_ROOTS`] (what the off-CPU
/// profile showed before):
///
/// * `runtime.mcall` switches from a goroutine to the thread's scheduler
///   stack (g0) to run `park_m`, `goexit0`, `exitsyscall0`, `gopreempt_m`,
///   `preemptPark` and the like, and leaves the goroutine's frame pointer in
///   RBP (on purpose, for unwinders). The goroutine is dropped from the
///   thread, which goes on to `schedule` and may sleep idle (`stopm`,
///   `netpoll`) for seconds; the chain still leads into the dropped
///   goroutine's stack, where it may be running on another thread, or
///   parked. Followed, every idle period of that thread until it runs a
///   goroutine again was counted under the goroutine's functions: in the
///   agent's `lockwait -mode sleep` test, 1.1 to 3.0 s of idle scheduler
///   threads (stopped in `exitsyscall0`, or after `asyncPreempt`) under
///   `main.offcpuSleep`, up to 1.8 times the time slept; with `-mode
///   mutex`, 4.4 to 6.1 s under `main.contend` in a 2 s run, although those
///   goroutines only park and never block their thread.
/// * `runtime.mstart` is the root of every thread but the first; its RBP is
///   what the thread that called `clone` had, so the chain continues into
///   that thread's stack as it is now (seen: an idle thread's stack going on
///   past `runtime.mstart` into another thread's scheduler frames).
pub use profiler_symbolize::GO_THREAD_ROOTS;

/// Cut `frames` (leaf first) after the first frame whose function (the
/// outermost of its inlined lines) is one of [`GO_THREAD_ROOTS`], which stays
/// as the stack's root. Stacks without one (non-Go code, a goroutine's own
/// frames, `runtime.systemstack` on its behalf) are left whole.
pub fn cut_at_go_thread_root(frames: &mut Vec<ResolvedFrame>) {
    let outermost = frames
        .iter()
        .map(|f| f.lines.last().map(|l| l.function.as_str()));
    if let Some(i) = profiler_symbolize::go_thread_root(outermost) {
        frames.truncate(i + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use profiler_symbolize::FrameLine;

    fn frame(address: u64, functions: &[&str]) -> ResolvedFrame {
        ResolvedFrame {
            mapping: Some(0),
            address,
            lines: functions
                .iter()
                .map(|f| FrameLine {
                    function: f.to_string(),
                    system_name: f.to_string(),
                    file: String::new(),
                    line: 0,
                    column: 0,
                })
                .collect(),
        }
    }

    fn names(frames: &[ResolvedFrame]) -> Vec<&str> {
        frames
            .iter()
            .map(|f| f.lines.last().map_or("?", |l| l.function.as_str()))
            .collect()
    }

    /// An idle scheduler thread whose chain ran on through `runtime.mcall`
    /// into the goroutine it dropped (the stack seen under
    /// `main.offcpuSleep` in the agent's off-CPU windows) ends at
    /// `runtime.mcall`.
    #[test]
    fn an_idle_thread_ends_at_mcall_not_in_the_dropped_goroutine() {
        let mut f = vec![
            frame(1, &["runtime.futex"]),
            frame(2, &["runtime.mPark", "runtime.stopm"]),
            frame(3, &["runtime.findRunnable"]),
            frame(4, &["runtime.schedule"]),
            frame(5, &["runtime.exitsyscall0"]),
            frame(6, &["runtime.mcall"]),
            frame(7, &["syscall.Syscall"]),
            frame(8, &["main.offcpuSleep"]),
            frame(9, &["runtime.goexit"]),
        ];
        cut_at_go_thread_root(&mut f);
        assert_eq!(
            names(&f),
            [
                "runtime.futex",
                "runtime.stopm",
                "runtime.findRunnable",
                "runtime.schedule",
                "runtime.exitsyscall0",
                "runtime.mcall"
            ]
        );
        let mut t = vec![
            frame(1, &["runtime.futex"]),
            frame(2, &["runtime.mstart0"]),
            frame(3, &["runtime.mstart"]),
            frame(4, &[]),
            frame(5, &["runtime.park_m"]),
            frame(6, &["main.contend"]),
        ];
        cut_at_go_thread_root(&mut t);
        assert_eq!(
            names(&t),
            ["runtime.futex", "runtime.mstart0", "runtime.mstart"]
        );
    }

    /// A thread blocked in its goroutine's own system call, or in runtime
    /// code run on its behalf through `runtime.systemstack`, keeps the
    /// goroutine's frames; so does code that is not Go.
    #[test]
    fn a_goroutines_own_blocking_keeps_its_stack() {
        let own = vec![
            frame(1, &["internal/runtime/syscall.Syscall6"]),
            frame(2, &["syscall.Syscall"]),
            frame(3, &["main.offcpuSleep"]),
            frame(4, &["runtime.goexit"]),
        ];
        let on_behalf = vec![
            frame(1, &["runtime.futex"]),
            frame(2, &["runtime.exitsyscallfast_pidle"]),
            frame(3, &["runtime.systemstack"]),
            frame(4, &["runtime.exitsyscall"]),
            frame(5, &["main.offcpuSleep"]),
        ];
        let c = vec![frame(1, &["nanosleep"]), frame(2, &["main"]), frame(3, &[])];
        for stack in [own, on_behalf, c] {
            let mut cut = stack.clone();
            cut_at_go_thread_root(&mut cut);
            assert_eq!(cut, stack);
        }
    }
}
