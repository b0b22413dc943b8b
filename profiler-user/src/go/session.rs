//! The Go probes of one recording: the maps, loading the programs, the
//! periodic tick, and the part of `finish` shared by every profile type.

use std::{
    collections::{HashMap, HashSet},
    time::Instant,
};

use aya::maps::{HashMap as AyaHashMap, MapData, PerCpuArray, PerCpuHashMap, StackTraceMap};
use aya::programs::UProbe;
use diff::pprof::proto::Profile;
use profiler_common::go::{
    GoCounter, GoFpStack, GoLatKey, GoLatStart, GoProcConfig, GoStackKey, GoidKey, LatCounts,
    SiteCounts,
};
use profiler_common::lock::{ParkKey, Parked, WaitTotals};
use profiler_symbolize::{ProfileMeta, ProfileShape, Symbolizer};

use super::{preset, CountStacks, GoOptions, Proc, StackCache, SERIES_INTERVAL};
use crate::{error::RecordError, sampler::Sampler};

/// The Go probes of one recording.
pub struct GoSession {
    pub(super) opts: GoOptions,
    pub(super) patterns: Vec<String>,
    pub(super) counters: PerCpuArray<MapData, u64>,
    pub(super) procs_map: AyaHashMap<MapData, u32, GoProcConfig>,
    pub(super) stacks: StackTraceMap<MapData>,
    pub(super) fp_stacks: AyaHashMap<MapData, u64, GoFpStack>,
    pub(super) calls: PerCpuHashMap<MapData, GoStackKey, u64>,
    pub(super) allocs: PerCpuHashMap<MapData, GoStackKey, u64>,
    pub(super) sites: PerCpuHashMap<MapData, GoStackKey, SiteCounts>,
    pub(super) goroutines: AyaHashMap<MapData, GoidKey, GoStackKey>,
    pub(super) symbols: Vec<String>,
    pub(super) symbol_index: HashMap<String, u64>,
    pub(super) procs: HashMap<u32, Proc>,
    pub(super) series: HashMap<GoStackKey, Vec<(f64, f64)>>,
    pub(super) series_overflow: u64,
    pub(super) proc_overflow: u64,
    pub(super) started: Instant,
    pub(super) last_series: Option<Instant>,
    pub(super) notes: Vec<String>,
    pub(super) probes_attached: u64,
    pub(super) single_stepped: Vec<String>,
    pub(super) prog_fds: Vec<(&'static str, i32)>,
    pub(super) skipped: HashSet<(u32, String)>,
    pub(super) call_sites: PerCpuHashMap<MapData, GoStackKey, u64>,
    pub(super) count_stacks: CountStacks,
    /// Benchmark-stage cookie bits of the counted-call probes.
    pub(super) bench_bits: u64,
    /// The agent's mode: probes per binary for all processes (None: per
    /// process, as `record` does).
    pub(super) shared: Option<super::shared::Shared>,
    /// `--latency` patterns (with the preset's).
    pub(super) lat_patterns: Vec<String>,
    /// Latency-measured functions; the index is the probes' tag.
    pub(super) lat_symbols: Vec<String>,
    pub(super) lat_index: HashMap<String, u64>,
    /// Calls in progress (entry seen, no `RET` yet).
    pub(super) lat_inflight: Option<AyaHashMap<MapData, GoLatKey, GoLatStart>>,
    /// (stack, function, bucket) -> calls and summed duration.
    pub(super) lat_hist: Option<PerCpuHashMap<MapData, GoStackKey, LatCounts>>,
    /// Lock waits by waiter stack (`CONTENTION`).
    pub(super) contention: AyaHashMap<MapData, GoStackKey, WaitTotals>,
    /// The contention probes' counters (`CONTENTION_COUNTERS`).
    pub(super) lock_counters: PerCpuArray<MapData, u64>,
    /// The heap profile's reads, per process.
    pub(super) heap_state: HashMap<u32, super::heap::HeapState>,
    /// Goroutines parked on a semaphore now (`CONTENTION_PARKED`; with
    /// contention only): the agent releases exited processes' entries and
    /// keeps their stacks.
    pub(super) parked: Option<AyaHashMap<MapData, ParkKey, Parked>>,
}

/// What every profile type's build step shares: the metadata with the
/// common comments, the summary lines shared by all types, the recording's
/// length in seconds and the frames already read.
pub(super) struct Finish {
    pub(super) meta: ProfileMeta,
    pub(super) common_summary: Vec<String>,
    pub(super) elapsed: f64,
    pub(super) cache: StackCache,
}

/// Slot `index` of a per-CPU counter array, summed over CPUs (0 when
/// unreadable).
pub(crate) fn counter_sum(map: &PerCpuArray<MapData, u64>, index: u32) -> u64 {
    map.get(&index, 0).map(|v| v.iter().sum()).unwrap_or(0)
}

/// Take map `name` out of the sampler's eBPF object as a `T`.
pub(crate) fn take<T>(sampler: &mut Sampler, name: &str) -> Result<T, RecordError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let m = sampler
        .ebpf_mut()
        .take_map(name)
        .ok_or_else(|| RecordError::missing(format!("map {name} missing from the eBPF object")))?;
    T::try_from(m).map_err(|e| RecordError::ebpf(format!("map {name}"), e))
}

impl GoSession {
    /// Load the Go uprobe programs requested by `opts` into the sampler's
    /// eBPF object and take the Go maps. Fails on an unknown preset.
    pub fn start(sampler: &mut Sampler, opts: &GoOptions) -> Result<Self, RecordError> {
        let mut patterns = opts.count.clone();
        if let Some(p) = &opts.preset {
            let set = preset(p).ok_or_else(|| RecordError::UnknownPreset { name: p.clone() })?;
            patterns.extend(set.iter().map(|s| s.to_string()));
        }
        let mut lat_patterns = opts.latency.clone();
        if let Some(p) = &opts.latency_preset {
            let set = super::latency_preset(p).ok_or_else(|| {
                RecordError::Usage(format!(
                    "--latency-preset {p}: unknown preset (known: {})",
                    super::LATENCY_PRESETS.join(", ")
                ))
            })?;
            lat_patterns.extend(set.iter().map(|s| s.to_string()));
        }
        let mut progs = Vec::new();
        let mut prog_fds = Vec::new();
        if opts.profiles.calls && !patterns.is_empty() {
            progs.push("go_call");
        }
        if opts.profiles.goroutines {
            progs.extend(["go_newproc", "go_newproc_done", "go_exit"]);
        }
        if opts.profiles.allocs {
            progs.push("go_alloc");
        }
        let latency = opts.profiles.latency && !lat_patterns.is_empty();
        if latency {
            progs.extend(["go_lat_entry", "go_lat_ret"]);
        }
        if opts.profiles.contention {
            progs.extend(["go_park", "go_park_ready"]);
        }
        for name in progs {
            let p: &mut UProbe = sampler
                .ebpf_mut()
                .program_mut(name)
                .ok_or_else(|| RecordError::missing(format!("program {name} missing")))?
                .try_into()
                .map_err(|e| RecordError::ebpf(name, e))?;
            p.load().map_err(|e| RecordError::from_program(name, e))?;
            use std::os::fd::{AsFd as _, AsRawFd as _};
            if let Ok(fd) = p.fd() {
                prog_fds.push((name, fd.as_fd().as_raw_fd()));
            }
        }
        let mut notes = Vec::new();
        // Measurement knobs (cargo xtask bench go-probes); none are set
        // unless a benchmark build (`bench-knobs`) read them.
        let count_stacks = opts.knobs.count_stacks.unwrap_or(opts.count_stacks);
        let bench_bits = opts.knobs.call_stage;
        notes.extend(opts.knobs.notes());
        if opts.profiles.calls && patterns.is_empty() {
            notes.push(
                "calls: no --count symbol or --count-preset given: nothing counted".to_string(),
            );
        }
        Ok(Self {
            opts: opts.clone(),
            patterns,
            counters: take(sampler, "GO_COUNTERS")?,
            procs_map: take(sampler, "GO_PROCS")?,
            stacks: take(sampler, "GO_STACKS")?,
            fp_stacks: take(sampler, "GO_FP_STACKS")?,
            calls: take(sampler, "GO_CALLS")?,
            allocs: take(sampler, "GO_ALLOCS")?,
            sites: take(sampler, "GO_SITES")?,
            goroutines: take(sampler, "GO_GOROUTINES")?,
            symbols: Vec::new(),
            symbol_index: HashMap::new(),
            procs: HashMap::new(),
            series: HashMap::new(),
            series_overflow: 0,
            proc_overflow: 0,
            started: Instant::now(),
            last_series: None,
            notes,
            probes_attached: 0,
            single_stepped: Vec::new(),
            prog_fds,
            skipped: HashSet::new(),
            call_sites: take(sampler, "GO_CALL_SITES")?,
            count_stacks,
            bench_bits,
            shared: None,
            lat_patterns,
            lat_symbols: Vec::new(),
            lat_index: HashMap::new(),
            lat_inflight: if latency {
                Some(take(sampler, "GO_LAT_INFLIGHT")?)
            } else {
                None
            },
            lat_hist: if latency {
                Some(take(sampler, "GO_LAT_HIST")?)
            } else {
                None
            },
            contention: take(sampler, "CONTENTION")?,
            lock_counters: take(sampler, "CONTENTION_COUNTERS")?,
            heap_state: HashMap::new(),
            parked: if opts.profiles.contention {
                Some(take(sampler, "CONTENTION_PARKED")?)
            } else {
                None
            },
        })
    }

    /// In-kernel cost of each loaded Go program: (name, `run_time_ns`,
    /// `run_cnt`) from its fdinfo; zeros unless `kernel.bpf_stats_enabled=1`.
    /// This is the program's own run time, not the uprobe trap around it.
    pub fn prog_stats(&self) -> Vec<(&'static str, u64, u64)> {
        self.prog_fds
            .iter()
            .map(|(name, fd)| {
                let text =
                    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap_or_default();
                let field = |k: &str| {
                    text.lines()
                        .find_map(|l| l.strip_prefix(k))
                        .and_then(|v| v.trim_start_matches(':').trim().parse::<u64>().ok())
                        .unwrap_or(0)
                };
                (*name, field("run_time_ns"), field("run_cnt"))
            })
            .collect()
    }

    /// Choose how counted calls get their stacks (before
    /// [`Self::add_process`]; probes already attached keep their mode).
    pub fn set_count_stacks(&mut self, mode: CountStacks) {
        self.count_stacks = mode;
    }

    /// Notes gathered so far (binaries skipped, symbols not found, ...).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Periodic work: every 500 ms, sample the live goroutine count of
    /// each creation site (for the leak slope). Bounded by the site map.
    pub fn tick(&mut self, _sampler: &mut Sampler) {
        if self.procs.is_empty() {
            return;
        }
        let now = Instant::now();
        if self
            .last_series
            .is_some_and(|t| now.duration_since(t) < SERIES_INTERVAL)
        {
            return;
        }
        self.last_series = Some(now);
        if self.opts.alloc_set_rate.is_some() {
            let pids: Vec<u32> = self.procs.keys().copied().collect();
            for pid in pids {
                self.enforce_rate(pid);
            }
        }
        if self.opts.profiles.goroutines {
            self.collect_series(now);
        }
        if self.opts.profiles.heap {
            self.read_heaps();
        }
    }

    pub(super) fn counters(&self) -> Vec<(GoCounter, u64)> {
        GoCounter::ALL
            .iter()
            .map(|c| (*c, counter_sum(&self.counters, *c as u32)))
            .collect()
    }

    /// User stack of a key: the stack map's frames with the caller at
    /// `[SP]` inserted after the leaf (frame-pointer unwinding skips it at
    /// an entry probe).
    pub(super) fn frames(&self, key: &GoStackKey, cache: &mut StackCache) -> Vec<u64> {
        let mut v = if key.stack_hash != 0 {
            cache
                .entry((-1, key.stack_hash))
                .or_insert_with(|| {
                    self.fp_stacks
                        .get(&key.stack_hash, 0)
                        .map(|s| {
                            let n = (s.len as usize).min(s.frames.len());
                            s.frames[..n].to_vec()
                        })
                        .unwrap_or_default()
                })
                .clone()
        } else if key.stack_id >= 0 {
            cache
                .entry((key.stack_id, 0))
                .or_insert_with(|| {
                    self.stacks
                        .get(&(key.stack_id as u32), 0)
                        .map(|s| s.frames().iter().map(|f| f.ip).collect())
                        .unwrap_or_default()
                })
                .clone()
        } else {
            Vec::new()
        };
        if key.caller != 0 {
            let at = v.len().min(1);
            v.insert(at, key.caller);
        }
        v
    }

    /// Read everything (probes still attached), build the requested
    /// profiles and summary lines. Each returned profile is non-empty or
    /// says in its comments why it is empty.
    pub fn finish(
        mut self,
        _sampler: &mut Sampler,
        symbolizer: &mut Symbolizer,
        meta: &ProfileMeta,
    ) -> Vec<(String, Profile, Vec<String>)> {
        self.last_series = None;
        self.tick(_sampler);
        let counters = self.counters();
        let elapsed = self.started.elapsed().as_secs_f64();
        for &pid in self.procs.keys() {
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = symbolizer.snapshot_process(pid);
            }
        }
        let counter_line = format!(
            "go probe counters: {} probes_attached={} processes_skipped_table_full={} series_sites_dropped={}",
            counters
                .iter()
                .map(|(c, v)| format!("{}={v}", c.name()))
                .collect::<Vec<_>>()
                .join(" "),
            self.probes_attached,
            self.proc_overflow,
            self.series_overflow,
        );
        let cost: Vec<String> = self
            .prog_stats()
            .into_iter()
            .filter(|(_, _, n)| *n > 0)
            .map(|(name, ns, n)| format!("{name} runs={n} ns_per_run={}", ns / n))
            .collect();
        let losses: u64 = counters
            .iter()
            .filter(|(c, _)| c.is_loss())
            .map(|(_, v)| v)
            .sum();
        let mut base_comments = meta.comments.clone();
        base_comments.push(counter_line.clone());
        if !cost.is_empty() {
            base_comments.push(format!(
                "go probe program cost (bpf_stats): {}",
                cost.join(" ")
            ));
        }
        if !self.single_stepped.is_empty() {
            base_comments.push(format!(
                "probes single-stepped (no emulated instruction found; ~10 us per hit): {}",
                self.single_stepped.join(", ")
            ));
        }
        for n in &self.notes {
            base_comments.push(n.clone());
        }
        let procs_line = self
            .procs
            .iter()
            .map(|(pid, p)| {
                format!(
                    "pid {pid} {} {} (g offsets: goid={} gopc={})",
                    p.exe.display(),
                    p.version,
                    p.offsets.goid,
                    p.offsets.gopc
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        base_comments.push(format!("go processes: {procs_line}"));
        let mut common_summary = Vec::new();
        if losses > 0 {
            common_summary.push(format!("go probes lost data: {counter_line}"));
        }
        if self.procs.is_empty() {
            let line = "no Go program (Go 1.18+ with .gopclntab) among the targets: the Go profiles are empty".to_string();
            base_comments.push(line.clone());
            common_summary.push(line);
        }
        if !cost.is_empty() {
            common_summary.push(format!(
                "go probe program cost (bpf_stats): {}",
                cost.join(" ")
            ));
        }

        let mut f = Finish {
            meta: ProfileMeta {
                comments: base_comments,
                ..meta.clone()
            },
            common_summary,
            elapsed,
            cache: HashMap::new(),
        };
        let mut out = Vec::new();
        if self.opts.profiles.calls {
            out.push(self.calls_profile(symbolizer, &mut f));
        }
        if self.opts.profiles.goroutines {
            out.push(self.goroutines_profile(symbolizer, &mut f));
        }
        if self.opts.profiles.allocs {
            out.push(self.allocs_profile(symbolizer, &mut f));
        }
        if self.opts.profiles.latency {
            out.push(self.latency_profile(symbolizer, &mut f));
        }
        if self.opts.profiles.contention {
            let reconciles = if self.opts.profiles.latency {
                self.reconciles(&self.latency_cells())
            } else {
                None
            };
            out.push(self.contention_profile(symbolizer, &mut f, reconciles));
        }
        if self.opts.profiles.heap {
            out.push(self.heap_profile(symbolizer, &mut f));
        }
        // Lines shared by every profile type are reported once.
        for (_, _, lines) in out.iter_mut().skip(1) {
            lines.retain(|l| !f.common_summary.contains(l));
        }
        out
    }

    pub(super) fn render(
        &self,
        symbolizer: &mut Symbolizer,
        raws: Vec<super::profile::Row>,
        shape: &ProfileShape,
        meta: &ProfileMeta,
        comments: Vec<String>,
    ) -> Profile {
        let (mappings, samples) = super::profile::symbolize_rows(symbolizer, raws);
        let meta = ProfileMeta {
            comments,
            ..meta.clone()
        };
        profiler_symbolize::build_profile(&mappings, &samples, shape, &meta)
    }
}
