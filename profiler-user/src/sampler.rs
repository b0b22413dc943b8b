//! The kernel half of CPU sampling: load the eBPF object, attach it, set
//! targets, and drain the in-kernel aggregates.
//!
//! Count and stack maps come in two generations. [`Sampler::drain`] flips
//! the generation the programs write to, then reads and clears the idle
//! one, so nothing is lost to a race between reading and clearing.
//!
//! User stacks come from the program's own frame-pointer walk, stored per
//! generation in `USER_STACKS0/1` (stack hash -> frames); kernel stacks
//! from `bpf_get_stackid` in `STACKS0/1`. With the `bench-sampler` cargo
//! feature (benchmarks only), `PROFILER_BENCH_USER_STACKS=stackid` makes
//! the program take user stacks with `bpf_get_stackid` as it did before
//! the walk, so `cargo xtask bench overhead` measures both in one run.
//!
//! `--ebpf-log` ([`EbpfLog`]): the programs report rare events (a map that
//! filled, a stack walk that stopped at an unexpected frame, a failed
//! attach-time check) through aya-log; a thread forwards the records to
//! stderr. Off by default: the programs then never write a record.

use std::{
    collections::HashMap as StdHashMap,
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use aya::programs::perf_event::PerfEventLinkId;
use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf, StackTraceMap},
    programs::{
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
        PerfEvent, TracePoint,
    },
    Ebpf,
};
use profiler_common::{
    AddrRange, Config, Counter, EventKind, FpStack, FramelessSlice, LogState, ProcessEvent,
    SampleKey, EBPF_LOG_INTERVAL_NS, FRAMELESS_ENTRIES,
};

use crate::error::RecordError;

/// The eBPF object built by `build.rs`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/profiler-ebpf"));

/// Value in `TARGET_TGIDS`: sample this process and follow its children.
pub const TARGET_SAMPLE: u8 = 1;
/// Value in `TARGET_TGIDS`: do not sample, but follow children (used for the
/// profiler itself while it launches a command).
pub const TARGET_PARENT_ONLY: u8 = 2;

/// One drained aggregate: a distinct stack and how often it was sampled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainedStack {
    /// Process id.
    pub tgid: u32,
    /// Thread name.
    pub comm: String,
    /// User IPs, leaf first (frameless-leaf caller already inserted).
    pub user: Vec<u64>,
    /// Kernel IPs, leaf first.
    pub kernel: Vec<u64>,
    /// Samples.
    pub count: u64,
}

/// Per-counter totals read from the per-CPU counter map.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters(pub [u64; Counter::COUNT as usize]);

impl Counters {
    /// Value of one counter.
    pub fn get(&self, c: Counter) -> u64 {
        self.0[c as usize]
    }
    /// Sum of all loss counters.
    pub fn losses(&self) -> u64 {
        Counter::ALL
            .iter()
            .filter(|c| c.is_loss())
            .map(|c| self.get(*c))
            .sum()
    }
}

/// A loaded and attached sampler.
pub struct Sampler {
    /// `--ebpf-log`: the thread forwarding the programs' records (stopped,
    /// with a last read of the ring buffer, before the programs unload).
    _ebpf_log: Option<EbpfLog>,
    _ebpf: Ebpf,
    config: Array<MapData, u64>,
    counters: PerCpuArray<MapData, u64>,
    targets: HashMap<MapData, u32, u8>,
    cgroups: HashMap<MapData, u64, u8>,
    counts: [HashMap<MapData, SampleKey, u64>; 2],
    stacks: [StackTraceMap<MapData>; 2],
    user_stacks: [HashMap<MapData, u64, FpStack>; 2],
    frameless: Array<MapData, AddrRange>,
    frameless_index: HashMap<MapData, u32, FramelessSlice>,
    frameless_used: u32,
    /// Ranges not loaded because the shared table was full.
    pub frameless_overflow: u64,
    events: RingBuf<MapData>,
    generation: u64,
    sample_prog_fd: i32,
    sample_links: Vec<PerfEventLinkId>,
    /// `cpu_sample` was attached at start (a `--profile` list with `cpu`).
    cpu_sampling: bool,
}

pub(crate) fn tracepoint_offset(category: &str, name: &str, field: &str) -> Option<u64> {
    let path = format!("/sys/kernel/tracing/events/{category}/{name}/format");
    let alt = format!("/sys/kernel/debug/tracing/events/{category}/{name}/format");
    let text = std::fs::read_to_string(&path)
        .or_else(|_| std::fs::read_to_string(&alt))
        .ok()?;
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let decl = rest.split(';').next()?;
        let ident = decl.rsplit([' ', '*']).next()?;
        let ident = ident.split('[').next()?;
        if ident == field {
            let off = line.split("offset:").nth(1)?.split(';').next()?;
            return off.trim().parse().ok();
        }
    }
    None
}

fn map<T>(ebpf: &mut Ebpf, name: &str) -> Result<T, RecordError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let m = ebpf
        .take_map(name)
        .ok_or_else(|| RecordError::missing(format!("map {name} missing from the eBPF object")))?;
    T::try_from(m).map_err(|e| RecordError::ebpf(format!("map {name}"), e))
}

impl Sampler {
    /// Load the programs, attach the CPU sampler at `frequency` Hz to every
    /// online CPU and the process-lifecycle tracepoints. The target filter
    /// starts on with no targets (nothing is sampled) until
    /// [`Sampler::set_filter`] or targets are set, so no sample of another
    /// process (or of the profiler itself) slips in before that.
    pub fn start(frequency: u64) -> Result<Self, RecordError> {
        Self::start_with_log(Some(frequency), false)
    }

    /// [`Sampler::start`], and with `ebpf_log` (`--ebpf-log`) the programs
    /// report rare events, forwarded to stderr ([`EbpfLog`]) from before
    /// the first program is attached.
    ///
    /// `frequency` `None` (a `--profile` list without `cpu`): the object,
    /// its maps and the lifecycle tracepoints are loaded as usual (the Go
    /// probes and the off-CPU program need them), but `cpu_sample` is
    /// neither loaded nor attached: no perf event is opened, the targets
    /// pay nothing for CPU sampling, and [`Counter::Samples`] stays 0.
    pub fn start_with_log(frequency: Option<u64>, ebpf_log: bool) -> Result<Self, RecordError> {
        crate::env::ensure_tracefs();
        let mut ebpf = Ebpf::load(EBPF_OBJECT).map_err(RecordError::from_load)?;
        let ebpf_log = if ebpf_log {
            Some(EbpfLog::start(&mut ebpf)?)
        } else {
            None
        };

        let mut config: Array<MapData, u64> = map(&mut ebpf, "CONFIG")?;
        let offsets = [
            (
                Config::ForkParentPidOffset,
                tracepoint_offset("sched", "sched_process_fork", "parent_pid"),
            ),
            (
                Config::ForkChildPidOffset,
                tracepoint_offset("sched", "sched_process_fork", "child_pid"),
            ),
            (
                Config::ExecPidOffset,
                tracepoint_offset("sched", "sched_process_exec", "pid"),
            ),
            (
                Config::ExitPidOffset,
                tracepoint_offset("sched", "sched_process_exit", "pid"),
            ),
            (
                Config::ExitGroupDeadOffset,
                tracepoint_offset("sched", "sched_process_exit", "group_dead"),
            ),
        ];
        let log_flag = [(Config::EbpfLog, Some(ebpf_log.is_some() as u64))];
        for (slot, off) in offsets
            .into_iter()
            .chain([(Config::FilterEnabled, Some(1))])
            .chain(log_flag)
        {
            config
                .set(slot as u32, off.unwrap_or(u64::MAX), 0)
                .map_err(|e| RecordError::ebpf("CONFIG", e))?;
        }

        let mut sampler = Sampler {
            config,
            counters: map(&mut ebpf, "COUNTERS")?,
            targets: map(&mut ebpf, "TARGET_TGIDS")?,
            cgroups: map(&mut ebpf, "TARGET_CGROUPS")?,
            counts: [map(&mut ebpf, "COUNTS0")?, map(&mut ebpf, "COUNTS1")?],
            stacks: [map(&mut ebpf, "STACKS0")?, map(&mut ebpf, "STACKS1")?],
            user_stacks: [
                map(&mut ebpf, "USER_STACKS0")?,
                map(&mut ebpf, "USER_STACKS1")?,
            ],
            frameless: map(&mut ebpf, "FRAMELESS")?,
            frameless_index: map(&mut ebpf, "FRAMELESS_INDEX")?,
            frameless_used: 0,
            frameless_overflow: 0,
            events: map(&mut ebpf, "EVENTS")?,
            generation: 0,
            sample_prog_fd: -1,
            sample_links: Vec::new(),
            cpu_sampling: frequency.is_some(),
            _ebpf_log: ebpf_log,
            _ebpf: ebpf,
        };
        #[cfg(feature = "bench-sampler")]
        if std::env::var("PROFILER_BENCH_USER_STACKS").as_deref() == Ok("stackid") {
            sampler.set_config(
                Config::UserStackMode,
                profiler_common::USER_STACK_MODE_STACKID,
            )?;
        }

        for (prog, category, name) in [
            ("sched_fork", "sched", "sched_process_fork"),
            ("sched_exec", "sched", "sched_process_exec"),
            ("sched_exit", "sched", "sched_process_exit"),
        ] {
            let tp: &mut TracePoint = sampler
                ._ebpf
                .program_mut(prog)
                .ok_or_else(|| RecordError::missing(format!("program {prog} missing")))?
                .try_into()
                .map_err(|e| RecordError::ebpf(prog, e))?;
            tp.load().map_err(|e| RecordError::from_program(prog, e))?;
            tp.attach(category, name)
                .map_err(|e| RecordError::ebpf(format!("attach {prog} to {category}/{name}"), e))?;
        }

        let Some(frequency) = frequency else {
            return Ok(sampler);
        };
        let cpus = aya::util::online_cpus()
            .map_err(|(path, e)| RecordError::ebpf(format!("reading {path}"), e))?;
        let prog: &mut PerfEvent = sampler
            ._ebpf
            .program_mut("cpu_sample")
            .ok_or_else(|| RecordError::missing("program cpu_sample missing"))?
            .try_into()
            .map_err(|e| RecordError::ebpf("cpu_sample", e))?;
        prog.load()
            .map_err(|e| RecordError::from_program("cpu_sample", e))?;
        {
            use std::os::fd::{AsFd as _, AsRawFd as _};
            if let Ok(fd) = prog.fd() {
                sampler.sample_prog_fd = fd.as_fd().as_raw_fd();
            }
        }
        for cpu in cpus {
            let link = prog
                .attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Frequency(frequency),
                    false,
                )
                .map_err(|e| RecordError::PerfEvent { cpu, source: e })?;
            sampler.sample_links.push(link);
        }
        Ok(sampler)
    }

    /// Stop sampling (detach `cpu_sample` from every CPU; the lifecycle
    /// tracepoints and any Go probes stay attached). Call it before the
    /// final drains: then the counters, `bpf_stats` and the drained counts
    /// all describe the same runs, and the profile holds exactly
    /// [`Counter::Samples`] samples minus the counted losses.
    pub fn stop(&mut self) {
        let links = std::mem::take(&mut self.sample_links);
        if links.is_empty() {
            return;
        }
        if let Some(Ok(prog)) = self
            ._ebpf
            .program_mut("cpu_sample")
            .map(<&mut PerfEvent>::try_from)
        {
            for link in links {
                let _ = prog.detach(link);
            }
        }
        // Let runs that started before the detach finish (microseconds,
        // with preemption disabled).
        std::thread::sleep(Duration::from_millis(2));
    }

    /// Whether the CPU sampler (`cpu_sample`) was attached at start.
    pub fn samples_cpu(&self) -> bool {
        self.cpu_sampling
    }

    /// The loaded eBPF object, for attaching further programs (Go runtime
    /// uprobes) and taking the maps this module does not own.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self._ebpf
    }

    fn set_config(&mut self, slot: Config, value: u64) -> Result<(), RecordError> {
        self.config
            .set(slot as u32, value, 0)
            .map_err(|e| RecordError::ebpf(format!("CONFIG[{slot:?}]"), e))
    }

    /// Restrict sampling to targets (`true`) or sample the whole system.
    pub fn set_filter(&mut self, enabled: bool) -> Result<(), RecordError> {
        self.set_config(Config::FilterEnabled, enabled as u64)
    }

    /// Add a process (and, through the fork tracepoint, its future children).
    pub fn add_tgid(&mut self, tgid: u32, value: u8) -> Result<(), RecordError> {
        self.targets
            .insert(tgid, value, 0)
            .map_err(|e| RecordError::ebpf(format!("adding pid {tgid} to targets"), e))
    }

    /// Remove a process from the targets (missing entries are fine).
    pub fn remove_tgid(&mut self, tgid: u32) {
        let _ = self.targets.remove(&tgid);
    }

    /// Ids currently in the target map.
    pub fn target_ids(&self) -> Vec<u32> {
        self.targets.keys().filter_map(Result::ok).collect()
    }

    /// Add a cgroup (v2 id); processes in it or any descendant are sampled.
    pub fn add_cgroup(&mut self, id: u64) -> Result<(), RecordError> {
        self.cgroups
            .insert(id, 1u8, 0)
            .map_err(|e| RecordError::ebpf(format!("adding cgroup {id}"), e))?;
        self.set_config(Config::CgroupFilter, 1)
    }

    /// Remove a cgroup from the filter (missing entries are fine). The
    /// filter stays on: with no cgroups and no pids nothing is sampled.
    pub fn remove_cgroup(&mut self, id: u64) {
        let _ = self.cgroups.remove(&id);
    }

    /// Turn the cgroup filter on even before any cgroup is added (the agent
    /// samples nothing until it has found a target).
    pub fn enable_cgroup_filter(&mut self) -> Result<(), RecordError> {
        self.set_config(Config::CgroupFilter, 1)
    }

    /// Drop `tgid`'s frameless slice pointer (an exited process).
    pub fn clear_frameless(&mut self, tgid: u32) {
        let _ = self.frameless_index.remove(&tgid);
    }

    /// Entries in use of the frameless range table (of
    /// [`profiler_common::FRAMELESS_ENTRIES`]).
    pub fn frameless_used(&self) -> u32 {
        self.frameless_used
    }

    /// Store a binary's frameless ranges (ELF virtual addresses, sorted)
    /// in the shared table; returns the slice (bias 0), or `None` when the
    /// table is full (counted in [`Sampler::frameless_overflow`]).
    pub fn store_frameless(
        &mut self,
        ranges: &[AddrRange],
    ) -> Result<Option<FramelessSlice>, RecordError> {
        let len = ranges.len() as u32;
        if len == 0 {
            return Ok(None);
        }
        if self.frameless_used + len > FRAMELESS_ENTRIES {
            self.frameless_overflow += len as u64;
            return Ok(None);
        }
        let start = self.frameless_used;
        for (i, r) in ranges.iter().enumerate() {
            self.frameless
                .set(start + i as u32, r, 0)
                .map_err(|e| RecordError::ebpf("FRAMELESS", e))?;
        }
        self.frameless_used += len;
        Ok(Some(FramelessSlice {
            start,
            len,
            bias: 0,
        }))
    }

    /// Point `tgid` at a stored slice, with its load bias.
    pub fn set_frameless(&mut self, tgid: u32, slice: FramelessSlice) -> Result<(), RecordError> {
        self.frameless_index
            .insert(tgid, slice, 0)
            .map_err(|e| RecordError::ebpf("FRAMELESS_INDEX", e))
    }

    /// Pending process events (fork, exec, exit), bounded by the ring size.
    pub fn events(&mut self) -> Vec<(EventKind, u32)> {
        let mut out = Vec::new();
        while let Some(item) = self.events.next() {
            if item.len() < std::mem::size_of::<ProcessEvent>() {
                continue;
            }
            // SAFETY: ProcessEvent is plain data; length checked above.
            let ev: ProcessEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            let kind = match ev.kind {
                1 => EventKind::Fork,
                2 => EventKind::Exec,
                3 => EventKind::Exit,
                _ => continue,
            };
            out.push((kind, ev.tgid));
        }
        out
    }

    /// In-kernel cost of the sampling program: (`run_time_ns`, `run_cnt`)
    /// from its fdinfo. Both stay 0 unless `kernel.bpf_stats_enabled=1`.
    pub fn sample_prog_stats(&self) -> Option<(u64, u64)> {
        if self.sample_prog_fd < 0 {
            return None;
        }
        let text =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", self.sample_prog_fd)).ok()?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim_start_matches(':').trim().parse::<u64>().ok())
        };
        Some((field("run_time_ns")?, field("run_cnt")?))
    }

    /// Totals of the per-CPU counters.
    pub fn counters(&self) -> Counters {
        let mut c = Counters::default();
        for counter in Counter::ALL {
            if let Ok(values) = self.counters.get(&(counter as u32), 0) {
                c.0[counter as usize] = values.iter().sum();
            }
        }
        c
    }

    /// Flip generations and drain the idle one into `out`.
    pub fn drain(&mut self, out: &mut Vec<DrainedStack>) -> Result<(), RecordError> {
        let idle = (self.generation & 1) as usize;
        self.generation ^= 1;
        self.set_config(Config::Generation, self.generation)?;
        // Let programs that read the old generation finish (they run for
        // microseconds with preemption disabled).
        std::thread::sleep(Duration::from_millis(2));

        let counts = &mut self.counts[idle];
        let keys: Vec<SampleKey> = counts.keys().filter_map(Result::ok).collect();
        let mut entries = Vec::with_capacity(keys.len());
        for key in &keys {
            if let Ok(n) = counts.get(key, 0) {
                entries.push((*key, n));
            }
            let _ = counts.remove(key);
        }
        let user_stacks = &mut self.user_stacks[idle];
        let mut user_cache: StdHashMap<u64, Vec<u64>> = StdHashMap::new();
        let mut resolve_user = |hash: u64| -> Vec<u64> {
            if hash == 0 {
                return Vec::new();
            }
            user_cache
                .entry(hash)
                .or_insert_with(|| {
                    user_stacks
                        .get(&hash, 0)
                        .map(|s| {
                            let n = (s.len as usize).min(s.frames.len());
                            s.frames[..n].to_vec()
                        })
                        .unwrap_or_default()
                })
                .clone()
        };
        let stacks = &mut self.stacks[idle];
        let mut cache: StdHashMap<i32, Vec<u64>> = StdHashMap::new();
        let mut resolve = |id: i32| -> Vec<u64> {
            if id < 0 {
                return Vec::new();
            }
            cache
                .entry(id)
                .or_insert_with(|| {
                    stacks
                        .get(&(id as u32), 0)
                        .map(|s| s.frames().iter().map(|f| f.ip).collect())
                        .unwrap_or_default()
                })
                .clone()
        };
        for (key, count) in entries {
            let mut user = if key.user_stack != 0 {
                resolve_user(key.user_stack)
            } else {
                resolve(key.user_stack_id)
            };
            if key.frameless_ret != 0 && !user.is_empty() {
                user.insert(1, key.frameless_ret);
            }
            let kernel = resolve(key.kernel_stack_id);
            let end = key.comm.iter().position(|&b| b == 0).unwrap_or(16);
            out.push(DrainedStack {
                tgid: key.tgid,
                comm: String::from_utf8_lossy(&key.comm[..end]).into_owned(),
                user,
                kernel,
                count,
            });
        }
        let ids: Vec<u32> = stacks.stack_ids().filter_map(Result::ok).collect();
        for id in ids {
            let _ = stacks.remove(&id);
        }
        let user_stacks = &mut self.user_stacks[idle];
        let hashes: Vec<u64> = user_stacks.keys().filter_map(Result::ok).collect();
        for hash in hashes {
            let _ = user_stacks.remove(&hash);
        }
        Ok(())
    }
}

/// The cgroup v2 id of a cgroup directory (its inode number).
pub fn cgroup_id(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path)?.ino())
}

/// How often the `--ebpf-log` thread reads aya-log's ring buffer.
const EBPF_LOG_POLL: Duration = Duration::from_millis(100);

/// `--ebpf-log`: reads the records the eBPF programs write through
/// aya-log-ebpf (its `AYA_LOGS` ring buffer, 128 KiB) every 100 ms on a
/// thread and prints each as one `profiler: ebpf <level>: <message>` line on
/// stderr.
///
/// Bounded twice: the programs write at most one record per CPU per
/// [`EBPF_LOG_INTERVAL_NS`] (the rest are counted as suppressed), and a
/// record that does not fit in the ring buffer is dropped by aya-log-ebpf
/// (counted here as lost: written minus read). Both counts are printed
/// when the sampler stops, if not zero.
pub struct EbpfLog {
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    state: PerCpuArray<MapData, u64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The `log::Log` that aya-log hands the programs' records to: one line on
/// stderr per record, counted.
struct StderrLog {
    received: Arc<AtomicU64>,
}

impl log::Log for StderrLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        self.received.fetch_add(1, Ordering::Relaxed);
        let level = record.level().as_str().to_ascii_lowercase();
        eprintln!("profiler: ebpf {level}: {}", record.args());
    }

    fn flush(&self) {}
}

impl EbpfLog {
    /// Take aya-log's ring buffer and the programs' `LOG_STATE` out of the
    /// loaded (not yet attached) object and start the reader thread.
    fn start(ebpf: &mut Ebpf) -> Result<Self, RecordError> {
        let received = Arc::new(AtomicU64::new(0));
        let mut logger = aya_log::EbpfLogger::init_with_logger(
            ebpf,
            StderrLog {
                received: received.clone(),
            },
        )
        .map_err(|e| RecordError::ebpf("--ebpf-log: aya-log ring buffer AYA_LOGS", e))?;
        let state = map(ebpf, "LOG_STATE")?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ebpf-log".into())
            .spawn(move || loop {
                let last = stop2.load(Ordering::Acquire);
                logger.flush();
                if last {
                    break;
                }
                std::thread::sleep(EBPF_LOG_POLL);
            })
            .map_err(|e| RecordError::ebpf("--ebpf-log: starting the reader thread", e))?;
        Ok(Self {
            stop,
            received,
            state,
            thread: Some(thread),
        })
    }

    fn total(&self, slot: LogState) -> u64 {
        self.state
            .get(&(slot as u32), 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }
}

impl Drop for EbpfLog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let written = self.total(LogState::Emitted);
        let suppressed = self.total(LogState::Suppressed);
        let lost = written.saturating_sub(self.received.load(Ordering::Relaxed));
        if suppressed > 0 || lost > 0 {
            eprintln!(
                "profiler: ebpf log: {suppressed} more rare events not reported (at most one \
                 message per CPU per {} ms), {lost} messages lost (ring buffer full)",
                EBPF_LOG_INTERVAL_NS / 1_000_000
            );
        }
    }
}
