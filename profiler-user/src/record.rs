//! `profiler record`: sample the CPU stacks of processes, a cgroup or a
//! launched command, then write a pprof profile.
//!
//! The loop owns everything it starts: the sampler (detached when dropped),
//! the launched command (terminated on SIGTERM, waited for), and no other
//! task. Every in-memory aggregate is bounded; what overflows is counted and
//! reported in the summary and the profile's comments.

use std::{
    io::{IsTerminal as _, Write as _},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use profiler_common::Counter;
use profiler_symbolize::ProfileMeta;

use crate::{
    collector::{Aggregate, Collector, DrainPass, Snapshots, StopSignals},
    error::{CgroupProblem, RecordError},
    sampler::cgroup_id,
};

pub use crate::collector::{MAX_STACKS, RESNAPSHOT_PER_DRAIN};

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
    /// Report the eBPF programs' rare events on stderr (`--ebpf-log`).
    pub ebpf_log: bool,
    /// Write the CPU profile (`--profile cpu`, the default).
    pub cpu: bool,
    /// Off-CPU profile (`--profile offcpu`): sample one context switch in
    /// this many (`--offcpu-every`); `None`: off.
    pub offcpu: Option<u32>,
    /// Go runtime profiles (`--profile goroutines,allocs,calls`). With more
    /// than one profile type in all, `output` is a directory holding
    /// `<type>.pb.gz`.
    pub go: crate::go::GoOptions,
    /// Write the memory profile (`--profile memory`): the targets' memory
    /// cgroups and processes' RSS, sampled every 500 ms
    /// ([`crate::memory_usage`]).
    pub memory: bool,
}

/// How often `--profile memory` samples.
const MEMORY_INTERVAL: Duration = Duration::from_millis(500);

/// The memory cgroups and processes `--profile memory` watches: the
/// target cgroup's memory cgroup (and the processes in it), every `--pid`
/// (and the launched command) with its own memory cgroup.
fn memory_targets(pids: &[u32], cgroup: Option<&Path>) -> (Vec<PathBuf>, Vec<u32>) {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut all: Vec<u32> = pids.to_vec();
    if let Some(cg) = cgroup {
        dirs.extend(crate::memory_usage::memory_dir_for(cg));
        all.extend(crate::cgroup::procs_below(cg));
    }
    for &p in pids {
        dirs.extend(crate::memory_usage::memory_cgroup_of(p));
    }
    dirs.sort();
    dirs.dedup();
    all.sort_unstable();
    all.dedup();
    all.retain(|p| Path::new(&format!("/proc/{p}")).exists());
    (dirs, all)
}

/// Without CPU sampling, the processes `record` must look for itself:
/// those of the target cgroup (one may enter it without an `exec`), or in
/// whole-system mode every process. `--pid` targets and a launched
/// command are followed through the fork and exec events.
fn unfollowed_candidates(cgroup: Option<&Path>, filtered: bool) -> Vec<u32> {
    match cgroup {
        Some(cg) => crate::cgroup::procs_below(cg),
        None if !filtered => std::fs::read_dir("/proc")
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default(),
        None => Vec::new(),
    }
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
    /// Summary lines of the memory profile.
    pub memory_summary: Vec<String>,
    /// Profiles written.
    pub outputs: Vec<PathBuf>,
    /// The CPU sampler ran (`--profile` had `cpu`); otherwise `samples`
    /// and `processes` are 0 and no CPU profile was written.
    pub cpu: bool,
}

fn resolve_cgroup(path: &Path) -> Result<PathBuf, RecordError> {
    let err = |problem| RecordError::Cgroup {
        path: path.to_path_buf(),
        problem,
        source: None,
    };
    let mount = crate::cgroup::cgroup2_mount().ok_or_else(|| err(CgroupProblem::NoV2Mount))?;
    let candidate = if path.is_absolute() && path.starts_with(&mount) {
        path.to_path_buf()
    } else {
        mount.join(path.strip_prefix("/").unwrap_or(path))
    };
    if !candidate.is_dir() {
        return Err(err(CgroupProblem::NotFound { mount }));
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

    let filtered = !opts.pids.is_empty() || cgroup.is_some() || !opts.command.is_empty();
    let go = opts.go.profiles.any().then_some(&opts.go);
    // No `cpu` in --profile: no CPU sampler (no perf events opened).
    let mut c = Collector::start(
        opts.cpu.then_some(opts.frequency),
        filtered,
        go,
        Snapshots::EachDrain,
        opts.ebpf_log,
    )?;

    if let Some(every) = opts.offcpu {
        c.start_offcpu(every)?;
    }
    for &pid in &opts.pids {
        c.add_pid(pid)?;
    }
    if let Some(cg) = &cgroup {
        let id = cgroup_id(cg).map_err(|e| RecordError::Cgroup {
            path: cg.clone(),
            problem: CgroupProblem::NoId,
            source: Some(e),
        })?;
        c.sampler_mut().add_cgroup(id)?;
        for pid in crate::cgroup::procs_below(cg) {
            c.track(pid)?;
        }
    }

    let start_wall = SystemTime::now();
    let started = Instant::now();
    let mut child = None;
    if !opts.command.is_empty() {
        // Held before exec until the sampler's filter and every probe are
        // in place, so counts are complete from the first instruction.
        let cmd_err = |e| RecordError::Command {
            cmd: opts.command[0].clone(),
            source: e,
        };
        let held = crate::launch::HeldCommand::spawn(&opts.command).map_err(cmd_err)?;
        let pid = held.pid();
        c.track_held(pid, held.exe())?;
        let spawned = held.release().map_err(cmd_err)?;
        c.exec_done(pid);
        child = Some(spawned);
    }

    let mut agg = Aggregate::default();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Streams created once, so a signal that arrives while a drain runs is
    // still seen at the next select.
    let mut signals = StopSignals::install()?;
    let deadline = opts.duration.map(|d| started + d);
    let mut last_drain = Instant::now();
    let progress = opts.progress && std::io::stderr().is_terminal();
    let mut command_status = None;
    let mut memory = opts.memory.then(crate::memory_usage::MemoryUsage::default);
    let mut memory_pids = opts.pids.clone();
    if let Some(pid) = child.as_ref().and_then(|c: &tokio::process::Child| c.id()) {
        memory_pids.push(pid);
    }
    let mut last_memory: Option<Instant> = None;

    loop {
        let child_wait = async {
            match child.as_mut() {
                Some(c) => c.wait().await.ok(),
                None => std::future::pending().await,
            }
        };
        let stop = tokio::select! {
            _ = tick.tick() => false,
            _ = signals.recv() => true,
            status = child_wait => { command_status = status; child = None; true }
        };
        // Process lifecycle events first: snapshots must beat exits.
        c.handle_events(|tgid| opts.pids.contains(&tgid))?;
        c.tick();
        let now = Instant::now();
        let timed_out = deadline.is_some_and(|d| now >= d);
        if let Some(m) = memory.as_mut() {
            if stop
                || timed_out
                || last_memory.is_none_or(|t| now.duration_since(t) >= MEMORY_INTERVAL)
            {
                let (dirs, pids) = memory_targets(&memory_pids, cgroup.as_deref());
                m.sample(&dirs, &pids);
                last_memory = Some(now);
            }
        }
        if stop || timed_out || now.duration_since(last_drain) >= opts.drain_interval {
            let mut drained = c.drain()?;
            last_drain = now;
            let mut pass = DrainPass::default();
            for d in drained.drain(..) {
                c.prepare(d.tgid, &mut pass)?;
                agg.add(d);
            }
            c.recycle(drained);
            if !opts.cpu {
                // No samples to find processes by: look for them.
                c.track_new(unfollowed_candidates(cgroup.as_deref(), filtered))?;
            }
            c.refresh_live();
            if progress {
                let k = c.sampler().counters();
                eprint!(
                    "\rrecording: {:>5.1}s  samples {:>8}  lost {:>6}   ",
                    started.elapsed().as_secs_f64(),
                    agg.total,
                    k.losses() + agg.dropped_samples
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
    if let Some(mut ch) = child.take() {
        if let Some(pid) = ch.id() {
            // SAFETY: signalling our own child by its pid.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        command_status = tokio::time::timeout(Duration::from_secs(5), ch.wait())
            .await
            .ok()
            .and_then(Result::ok);
        if command_status.is_none() {
            let _ = ch.kill().await;
        }
    }
    c.drain_last(&mut agg)?;
    let elapsed = started.elapsed();
    let counters = c.sampler().counters();
    let prog_stats = c.sampler().sample_prog_stats();
    let frameless_overflow = c.sampler().frameless_overflow;
    let frameless_failures = c.frameless_failures();
    // Go profiles are read while their probes are still attached.
    let mut go_profiles = c.finish_go(&ProfileMeta {
        frequency_hz: 0,
        start: start_wall,
        duration: elapsed,
        comments: vec![],
    });
    go_profiles.extend(c.finish_offcpu(&ProfileMeta {
        frequency_hz: 0,
        start: start_wall,
        duration: elapsed,
        comments: vec![],
    }));
    let mut symbolizer = c.into_symbolizer();

    let mut summary = RecordSummary {
        samples: agg.kept(),
        processes: agg.processes(),
        elapsed,
        counters: Counter::ALL
            .iter()
            .map(|c| (c.name(), counters.get(*c)))
            .collect(),
        user_losses: vec![
            ("userspace_stack_table_full", agg.dropped_samples),
            ("frameless_table_full", frameless_overflow),
            ("frameless_load_failures", frameless_failures),
        ],
        command_status,
        prog_stats,
        go_summary: Vec::new(),
        memory_summary: Vec::new(),
        outputs: Vec::new(),
        cpu: opts.cpu,
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
    let types = usize::from(opts.cpu) + go_profiles.len() + usize::from(memory.is_some());
    let out_path = |kind: &str| -> Result<PathBuf, RecordError> {
        if types <= 1 {
            return Ok(opts.output.clone());
        }
        std::fs::create_dir_all(&opts.output).map_err(|e| {
            RecordError::output(
                &opts.output,
                format!("{e} (with several --profile types, -o is a directory)"),
            )
        })?;
        Ok(opts.output.join(format!("{kind}.pb.gz")))
    };
    for (kind, p, lines) in &go_profiles {
        let path = out_path(kind)?;
        profiler_symbolize::write_pprof_gz(p, &path).map_err(|e| RecordError::output(&path, e))?;
        summary.go_summary.extend(lines.iter().cloned());
        summary.outputs.push(path);
    }
    if let Some(m) = &memory {
        let path = out_path("memory")?;
        let p = m.profile(
            start_wall,
            elapsed,
            vec![format!(
                "profiler record --profile memory: sampled every {} ms",
                MEMORY_INTERVAL.as_millis()
            )],
        );
        profiler_symbolize::write_pprof_gz(&p, &path).map_err(|e| RecordError::output(&path, e))?;
        summary.memory_summary = m.summary();
        summary.outputs.push(path);
    }
    if !opts.cpu {
        return Ok(summary);
    }
    let cpu_path = out_path("cpu")?;
    profiler_symbolize::write_pprof_gz(&profile, &cpu_path)
        .map_err(|e| RecordError::output(&cpu_path, e))?;
    summary.outputs.push(cpu_path);
    if let Some(svg) = &opts.flamegraph {
        crate::flamegraph::write(&profile, svg).map_err(|e| RecordError::output(svg, e))?;
    }
    Ok(summary)
}
