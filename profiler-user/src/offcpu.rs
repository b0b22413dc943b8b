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

use std::{collections::HashMap, time::Instant};

use aya::maps::{Array, HashMap as AyaHashMap, MapData, PerCpuArray};
use aya::programs::TracePoint;
use diff::pprof::proto::Profile;
use profiler_common::{
    lock::{LockCounter, OffCpuConfig, OffCpuKey, WaitTotals},
    FpStack,
};
use profiler_symbolize::{ProfileMeta, ProfileSample, ProfileShape, RawSample, Symbolizer};

use crate::{error::RecordError, sampler::Sampler};

fn take<T>(sampler: &mut Sampler, name: &str) -> Result<T, RecordError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let m = sampler
        .ebpf_mut()
        .take_map(name)
        .ok_or_else(|| RecordError::missing(format!("map {name} missing from the eBPF object")))?;
    T::try_from(m).map_err(|e| RecordError::ebpf(format!("map {name}"), e))
}

/// The off-CPU program of one recording and its maps.
pub struct OffCpu {
    every: u32,
    totals: AyaHashMap<MapData, OffCpuKey, WaitTotals>,
    stacks: AyaHashMap<MapData, u64, FpStack>,
    counters: PerCpuArray<MapData, u64>,
    prog_fd: i32,
    started: Instant,
}

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
            counters: take(sampler, "OFFCPU_COUNTERS")?,
            prog_fd,
            started: Instant::now(),
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
            .map(|c| {
                let v = self
                    .counters
                    .get(&(*c as u32), 0)
                    .map(|v| v.iter().sum())
                    .unwrap_or(0);
                (*c, v)
            })
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
        let every = u64::from(self.every);
        let mut cache: HashMap<u64, Vec<u64>> = HashMap::new();
        let mut rows = Vec::new();
        let (mut intervals, mut nanos) = (0u64, 0u64);
        for k in self.totals.keys().filter_map(Result::ok) {
            let Ok(v) = self.totals.get(&k, 0) else {
                continue;
            };
            intervals += v.count;
            nanos += v.nanos;
            let frames = if k.stack_hash == 0 {
                Vec::new()
            } else {
                cache
                    .entry(k.stack_hash)
                    .or_insert_with(|| {
                        self.stacks
                            .get(&k.stack_hash, 0)
                            .map(|s| s.frames[..(s.len as usize).min(s.frames.len())].to_vec())
                            .unwrap_or_default()
                    })
                    .clone()
            };
            rows.push((k.tgid, frames, v));
        }
        for tgid in rows
            .iter()
            .map(|r| r.0)
            .collect::<std::collections::HashSet<_>>()
        {
            if std::path::Path::new(&format!("/proc/{tgid}")).exists() {
                let _ = symbolizer.snapshot_process(tgid);
            }
        }
        let raw: Vec<RawSample> = rows
            .iter()
            .map(|(tgid, frames, _)| RawSample {
                tgid: *tgid,
                tid: *tgid,
                comm: String::new(),
                user: frames.clone(),
                kernel: vec![],
                count: 1,
            })
            .collect();
        let (mappings, resolved) = symbolizer.resolve_samples(&raw);
        let samples: Vec<ProfileSample> = resolved
            .into_iter()
            .zip(&rows)
            .map(|(r, (tgid, _, v))| ProfileSample {
                frames: r.frames,
                pid: *tgid,
                values: vec![
                    v.count.saturating_mul(every) as i64,
                    v.nanos.saturating_mul(every) as i64,
                ],
                labels: vec![],
            })
            .collect();
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
        ("offcpu".to_string(), p, summary)
    }
}
