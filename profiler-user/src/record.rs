//! `profiler record`: sample the CPU stacks of processes, a cgroup or a
//! launched command, then write a pprof profile.
//!
//! The loop owns everything it starts: the sampler (detached when dropped),
//! the launched command (terminated on SIGTERM, waited for), and no other
//! task. Every in-memory aggregate is bounded; what overflows is counted and
//! reported in the summary and the profile's comments.

use std::{
    collections::{HashMap, HashSet},
    io::{IsTerminal as _, Write as _},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use profiler_common::{AddrRange, Counter, EventKind, FramelessSlice};
use profiler_symbolize::{Limits, ProfileMeta, RawSample, Symbolizer};

use crate::{
    error::RecordError,
    sampler::{cgroup_id, DrainedStack, Sampler, TARGET_PARENT_ONLY, TARGET_SAMPLE},
};

/// Distinct stacks kept in userspace before new ones are dropped (counted).
pub const MAX_STACKS: usize = 500_000;
/// Processes re-snapshotted per drain (those that produced samples).
pub const RESNAPSHOT_PER_DRAIN: usize = 64;

/// What to record and where to write it.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// Processes to sample (their future children too).
    pub pids: Vec<u32>,
    /// A cgroup (v2) whose processes, in it or below, are sampled.
    pub cgroup: Option<PathBuf>,
    /// Stop after this long (otherwise on signal or command exit).
    pub duration: Option<Duration>,
    /// Sampling frequency per CPU, Hz.
    pub frequency: u64,
    /// Where the gzip'd pprof goes.
    pub output: PathBuf,
    /// Optional flame graph SVG.
    pub flamegraph: Option<PathBuf>,
    /// A command to launch and profile (with its children).
    pub command: Vec<String>,
    /// How often the kernel maps are drained.
    pub drain_interval: Duration,
    /// Show a progress line (only honoured on a terminal).
    pub progress: bool,
    /// Write the CPU profile (`--profile cpu`, the default).
    pub cpu: bool,
    /// Go runtime profiles (`--profile goroutines,allocs,calls`). With more
    /// than one profile type in all, `output` is a directory holding
    /// `<type>.pb.gz`.
    pub go: crate::go::GoOptions,
}

/// What a recording collected, for the summary line.
#[derive(Debug, Clone, Default)]
pub struct RecordSummary {
    /// Samples written to the profile.
    pub samples: u64,
    /// Distinct processes seen.
    pub processes: usize,
    /// Wall time recorded.
    pub elapsed: Duration,
    /// Kernel counters, by name.
    pub counters: Vec<(&'static str, u64)>,
    /// Userspace losses, by name.
    pub user_losses: Vec<(&'static str, u64)>,
    /// Exit status of the launched command, if any.
    pub command_status: Option<std::process::ExitStatus>,
    /// In-kernel cost of the sampling program (`run_time_ns`, `run_cnt`),
    /// non-zero only with `kernel.bpf_stats_enabled=1`.
    pub prog_stats: Option<(u64, u64)>,
    /// Summary lines of the Go runtime profiles (leak signals, counts).
    pub go_summary: Vec<String>,
    /// Profiles written.
    pub outputs: Vec<PathBuf>,
}

pub(crate) type StackKey = (u32, String, Vec<u64>, Vec<u64>);

/// Userspace aggregate of drained stacks, bounded by [`MAX_STACKS`].
#[derive(Default)]
pub(crate) struct Aggregate {
    pub(crate) stacks: HashMap<StackKey, u64>,
    pub(crate) dropped_samples: u64,
    pub(crate) total: u64,
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

    pub(crate) fn add(&mut self, d: DrainedStack) {
        self.add_bounded(d, true);
    }

    /// Adds `d`; a stack not seen before is kept only when `allow_new`
    /// (and below [`MAX_STACKS`]), else its samples are counted as
    /// dropped. Returns whether a new stack was kept.
    pub(crate) fn add_bounded(&mut self, d: DrainedStack, allow_new: bool) -> bool {
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
pub(crate) struct FramelessLoader {
    /// (exe path, device, inode) -> stored slice (None: no ranges / not Go).
    cache: HashMap<(String, u64, u64), Option<FramelessSlice>>,
    pub(crate) loaded: HashSet<u32>,
    pub(crate) failures: u64,
}

impl FramelessLoader {
    pub(crate) fn load(&mut self, sampler: &mut Sampler, symbolizer: &Symbolizer, tgid: u32) {
        use std::os::unix::fs::MetadataExt as _;
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
                let slice =
                    if profiler_symbolize::is_go_binary(Path::new(&format!("/proc/{tgid}/exe"))) {
                        match profiler_symbolize::frameless_ranges(Path::new(&format!(
                            "/proc/{tgid}/exe"
                        ))) {
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
                    } else {
                        None
                    };
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
}

fn resolve_cgroup(path: &Path) -> Result<PathBuf, RecordError> {
    let err = |why: &str| RecordError::Cgroup {
        path: path.display().to_string(),
        why: why.to_string(),
    };
    let mount = crate::cgroup::cgroup2_mount().ok_or_else(|| {
        err("no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup/unified)")
    })?;
    let candidate = if path.is_absolute() && path.starts_with(&mount) {
        path.to_path_buf()
    } else {
        mount.join(path.strip_prefix("/").unwrap_or(path))
    };
    if !candidate.is_dir() {
        return Err(err(&format!(
            "not found under the cgroup v2 mount {}: give a path like {}/kubepods.slice/...",
            mount.display(),
            mount.display()
        )));
    }
    Ok(candidate)
}

/// Run a recording to completion: until `duration`, SIGINT/SIGTERM, or the
/// launched command exits, then write the profile(s).
pub async fn record(opts: RecordOptions) -> Result<RecordSummary, RecordError> {
    crate::env::check()?;
    for &pid in &opts.pids {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return Err(RecordError::PidNotFound(pid));
        }
    }
    let cgroup = opts.cgroup.as_deref().map(resolve_cgroup).transpose()?;

    let mut sampler = Sampler::start(opts.frequency)?;
    let filtered = !opts.pids.is_empty() || cgroup.is_some() || !opts.command.is_empty();
    sampler.set_filter(filtered)?;
    let mut symbolizer = Symbolizer::new(Limits::default());
    let mut frameless = FramelessLoader::default();
    let mut known: HashSet<u32> = HashSet::new();
    let mut go = if opts.go.profiles.any() {
        Some(crate::go::GoSession::start(&mut sampler, &opts.go)?)
    } else {
        None
    };

    for &pid in &opts.pids {
        sampler.add_tgid(pid, TARGET_SAMPLE)?;
        let _ = symbolizer.snapshot_process(pid);
        frameless.load(&mut sampler, &symbolizer, pid);
        known.insert(pid);
        if let Some(g) = go.as_mut() {
            g.add_process(&mut sampler, pid)?;
        }
    }
    if let Some(cg) = &cgroup {
        let id = cgroup_id(cg).map_err(|e| RecordError::Cgroup {
            path: cg.display().to_string(),
            why: e.to_string(),
        })?;
        sampler.add_cgroup(id)?;
        for pid in crate::cgroup::procs_below(cg) {
            let _ = symbolizer.snapshot_process(pid);
            frameless.load(&mut sampler, &symbolizer, pid);
            known.insert(pid);
            if let Some(g) = go.as_mut() {
                g.add_process(&mut sampler, pid)?;
            }
        }
    }

    let start_wall = SystemTime::now();
    let started = Instant::now();
    let mut child = None;
    if !opts.command.is_empty() {
        let me = std::process::id();
        sampler.add_tgid(me, TARGET_PARENT_ONLY)?;
        let spawned = tokio::process::Command::new(&opts.command[0])
            .args(&opts.command[1..])
            .spawn();
        sampler.remove_tgid(me);
        let c = spawned.map_err(|e| RecordError::Command {
            cmd: opts.command[0].clone(),
            why: format!("{e} (check the program exists and is executable)"),
        })?;
        if let Some(pid) = c.id() {
            // The fork tracepoint normally added it already.
            sampler.add_tgid(pid, TARGET_SAMPLE)?;
            let _ = symbolizer.snapshot_process(pid);
            frameless.load(&mut sampler, &symbolizer, pid);
            known.insert(pid);
            if let Some(g) = go.as_mut() {
                g.add_process(&mut sampler, pid)?;
            }
        }
        child = Some(c);
    }

    let mut agg = Aggregate::default();
    let mut drained = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Streams created once, so a signal that arrives while a drain runs is
    // still seen at the next select.
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigterm = signal(SignalKind::terminate())
        .map_err(|e| RecordError::Ebpf(format!("installing the SIGTERM handler: {e}")))?;
    let mut sigint = signal(SignalKind::interrupt())
        .map_err(|e| RecordError::Ebpf(format!("installing the SIGINT handler: {e}")))?;
    let deadline = opts.duration.map(|d| started + d);
    let mut last_drain = Instant::now();
    let progress = opts.progress && std::io::stderr().is_terminal();
    let mut command_status = None;
    let mut resnapshot_round = 0u32;

    loop {
        let child_wait = async {
            match child.as_mut() {
                Some(c) => c.wait().await.ok(),
                None => std::future::pending().await,
            }
        };
        let stop = tokio::select! {
            _ = tick.tick() => false,
            _ = sigint.recv() => true,
            _ = sigterm.recv() => true,
            status = child_wait => { command_status = status; child = None; true }
        };
        // Process lifecycle events first: snapshots must beat exits.
        for (kind, tgid) in sampler.events() {
            match kind {
                EventKind::Fork => {
                    if !crate::cgroup::is_process(tgid) {
                        sampler.remove_tgid(tgid);
                        continue;
                    }
                    let _ = symbolizer.snapshot_process(tgid);
                    known.insert(tgid);
                }
                EventKind::Exec => {
                    let _ = symbolizer.snapshot_process(tgid);
                    frameless.loaded.remove(&tgid);
                    frameless.load(&mut sampler, &symbolizer, tgid);
                    known.insert(tgid);
                    if let Some(g) = go.as_mut() {
                        g.add_process(&mut sampler, tgid)?;
                    }
                }
                EventKind::Exit => {
                    // The exiting process's maps may still be readable.
                    let _ = symbolizer.snapshot_process(tgid);
                    if !opts.pids.contains(&tgid) {
                        sampler.remove_tgid(tgid);
                    }
                }
            }
        }
        if let Some(g) = go.as_mut() {
            g.tick(&mut sampler);
        }
        let now = Instant::now();
        let timed_out = deadline.is_some_and(|d| now >= d);
        if stop || timed_out || now.duration_since(last_drain) >= opts.drain_interval {
            sampler.drain(&mut drained)?;
            last_drain = now;
            // Snapshot the processes sampled in this drain (bounded): a
            // dynamically linked program maps its libraries after exec, and
            // a short-lived one may be gone by the next drain.
            let mut fresh: HashSet<u32> = HashSet::new();
            for d in drained.drain(..) {
                if known.insert(d.tgid) {
                    if let Some(g) = go.as_mut() {
                        g.add_process(&mut sampler, d.tgid)?;
                    }
                }
                if fresh.len() < RESNAPSHOT_PER_DRAIN && fresh.insert(d.tgid) {
                    let _ = symbolizer.snapshot_process(d.tgid);
                }
                if !frameless.loaded.contains(&d.tgid) {
                    frameless.load(&mut sampler, &symbolizer, d.tgid);
                }
                agg.add(d);
            }
            // Re-snapshot live processes now and then (dlopen, late maps).
            resnapshot_round += 1;
            // Forget processes that are gone, so these sets hold live
            // processes only (the symbolizer keeps their snapshots, bounded
            // by its own limits).
            if resnapshot_round.is_multiple_of(10) {
                known.retain(|&tgid| {
                    let alive = Path::new(&format!("/proc/{tgid}")).exists();
                    if alive {
                        let _ = symbolizer.snapshot_process(tgid);
                    }
                    alive
                });
                frameless.loaded.retain(|tgid| known.contains(tgid));
            }
            if progress {
                let c = sampler.counters();
                eprint!(
                    "\rrecording: {:>5.1}s  samples {:>8}  lost {:>6}   ",
                    started.elapsed().as_secs_f64(),
                    agg.total,
                    c.losses() + agg.dropped_samples
                );
                let _ = std::io::stderr().flush();
            }
        }
        if stop || timed_out {
            break;
        }
    }
    if progress {
        eprintln!();
    }
    // Stop a command we launched if it is still running (we own it).
    if let Some(mut c) = child.take() {
        if let Some(pid) = c.id() {
            // SAFETY: signalling our own child by its pid.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        command_status = tokio::time::timeout(Duration::from_secs(5), c.wait())
            .await
            .ok()
            .and_then(Result::ok);
        if command_status.is_none() {
            let _ = c.kill().await;
        }
    }
    // Stop sampling first, so the counters and the drained counts describe
    // the same runs. Both generations may hold samples: drain twice.
    sampler.stop();
    for _ in 0..2 {
        sampler.drain(&mut drained)?;
        for d in drained.drain(..) {
            if known.insert(d.tgid) {
                let _ = symbolizer.snapshot_process(d.tgid);
            }
            agg.add(d);
        }
    }
    let elapsed = started.elapsed();
    let counters = sampler.counters();
    let prog_stats = sampler.sample_prog_stats();
    let frameless_overflow = sampler.frameless_overflow;
    // Go profiles are read while their probes are still attached.
    let go_profiles = match go.take() {
        Some(g) => {
            let meta = ProfileMeta {
                frequency_hz: 0,
                start: start_wall,
                duration: elapsed,
                comments: vec![],
            };
            g.finish(&mut sampler, &mut symbolizer, &meta)
        }
        None => Vec::new(),
    };
    drop(sampler);

    let mut summary = RecordSummary {
        samples: agg.total - agg.dropped_samples,
        processes: agg.stacks.keys().map(|k| k.0).collect::<HashSet<_>>().len(),
        elapsed,
        counters: Counter::ALL
            .iter()
            .map(|c| (c.name(), counters.get(*c)))
            .collect(),
        user_losses: vec![
            ("userspace_stack_table_full", agg.dropped_samples),
            ("frameless_table_full", frameless_overflow),
            ("frameless_load_failures", frameless.failures),
        ],
        command_status,
        prog_stats,
        go_summary: Vec::new(),
        outputs: Vec::new(),
    };
    let mut comments = vec![format!(
        "profiler record: frequency={}Hz duration={:.3}s samples={}",
        opts.frequency,
        elapsed.as_secs_f64(),
        summary.samples
    )];
    comments.push(format!(
        "kernel counters: {}",
        summary
            .counters
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    comments.push(format!(
        "userspace losses: {}",
        summary
            .user_losses
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    let samples = agg.into_raw_samples();
    let meta = ProfileMeta {
        frequency_hz: opts.frequency,
        start: start_wall,
        duration: elapsed,
        comments,
    };
    let profile = symbolizer.build_profile(&samples, &meta);
    let stats = symbolizer.stats();
    summary
        .user_losses
        .push(("symbolizer_snapshot_errors", stats.snapshot_errors));
    // One profile type: `-o` is the file; several: a directory.
    let types = usize::from(opts.cpu) + go_profiles.len();
    let out_path = |kind: &str| -> Result<PathBuf, RecordError> {
        if types <= 1 {
            return Ok(opts.output.clone());
        }
        std::fs::create_dir_all(&opts.output).map_err(|e| RecordError::Output {
            path: opts.output.display().to_string(),
            why: format!("{e} (with several --profile types, -o is a directory)"),
        })?;
        Ok(opts.output.join(format!("{kind}.pb.gz")))
    };
    for (kind, p, lines) in &go_profiles {
        let path = out_path(kind)?;
        profiler_symbolize::write_pprof_gz(p, &path).map_err(|e| RecordError::Output {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
        summary.go_summary.extend(lines.iter().cloned());
        summary.outputs.push(path);
    }
    if !opts.cpu {
        return Ok(summary);
    }
    let cpu_path = out_path("cpu")?;
    profiler_symbolize::write_pprof_gz(&profile, &cpu_path).map_err(|e| RecordError::Output {
        path: cpu_path.display().to_string(),
        why: e.to_string(),
    })?;
    summary.outputs.push(cpu_path);
    if let Some(svg) = &opts.flamegraph {
        crate::flamegraph::write(&profile, svg).map_err(|e| RecordError::Output {
            path: svg.display().to_string(),
            why: format!("{e:#}"),
        })?;
    }
    Ok(summary)
}
