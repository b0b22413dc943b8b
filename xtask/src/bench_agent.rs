//! `cargo xtask bench agent`: what `profiler agent` itself costs while it
//! profiles 50 busy processes in 20 pod cgroups at 99 Hz.
//!
//! Lays out 20 pods in a bench-owned folder of the cgroup v2 mount (half in
//! the systemd driver's layout, half in cgroupfs's, one to four containers
//! each), starts 50 `demo` workloads inside them, runs the release agent
//! (`--no-kube --cgroup-root <folder>`) for `seconds`, and reads the agent's
//! own CPU time (`/proc/PID/stat` utime+stime, after start-up) and peak RSS
//! (`VmHWM`), plus its `/metrics` (samples, drops, windows) and, with
//! `kernel.bpf_stats_enabled=1` (set for the run, restored after), the
//! sampling program's in-kernel cost per run. Goal: ≤2% of one core and
//! ≤64 MiB RSS. Everything it started is ended by PID and every cgroup it
//! made is removed.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::owned::Owned;

/// Which part of the agent bench to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// CPU profiles of 50 busy processes.
    Cpu,
    /// All four profile types on 20 Go pods at controller-like rates.
    Go,
    /// Both, one after the other.
    Both,
}

/// Run the part(s) asked for.
pub fn run_part(root: &Path, seconds: u64, part: Part) -> Result<()> {
    if matches!(part, Part::Cpu | Part::Both) {
        run(root, seconds)?;
    }
    if matches!(part, Part::Go | Part::Both) {
        run_go(root, seconds)?;
    }
    Ok(())
}

const PODS: usize = 20;
const PROCESSES: usize = 50;

fn cgroup2_mount() -> Result<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mounts")?;
    text.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
        })
        .context("no cgroup v2 hierarchy is mounted")
}

fn hex_id(i: usize) -> String {
    format!(
        "{:064x}",
        (i as u128 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
    )
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.starts_with("HTTP/1.")
        .then(|| out.split_once("\r\n\r\n").map(|x| x.1.to_string()))?
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Run the benchmark for `seconds`.
pub fn run(root: &Path, seconds: u64) -> Result<()> {
    crate::setup::setup(root)?;
    let bins = crate::workloads::build_workloads(root)?;
    let release = crate::build_release(root)?;
    let mount = cgroup2_mount()?;
    let base = mount.join(format!("profiler-bench-agent-{}", std::process::id()));
    let mut owned = Owned::default();
    std::fs::create_dir(&base).with_context(|| format!("creating {}", base.display()))?;
    owned.dirs.push(base.clone());

    // 20 pods, 50 containers-with-a-process spread over them.
    let mut containers = Vec::new();
    for i in 0..PROCESSES {
        let pod = i % PODS;
        let uid = format!("{:08x}-0000-4000-8000-{:012x}", pod + 1, pod + 1);
        let cid = hex_id(i);
        let rel = if pod.is_multiple_of(2) {
            format!(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{cid}.scope",
                uid.replace('-', "_")
            )
        } else {
            format!("kubepods/besteffort/pod{uid}/{cid}")
        };
        containers.push(owned.mkdirs(&base, &rel)?);
    }
    for cg in &containers {
        let child = Command::new(bins.join("demo"))
            .stdout(Stdio::null())
            .spawn()
            .context("starting the demo workload")?;
        std::fs::write(cg.join("cgroup.procs"), child.id().to_string())
            .with_context(|| format!("moving a workload into {}", cg.display()))?;
        owned.children.push(child);
    }

    let stats_before = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
        .unwrap_or_default()
        .trim()
        .to_string();
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");

    let store =
        std::env::temp_dir().join(format!("profiler-bench-agent-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&store);
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut agent = Command::new(release.join("profiler"))
        .args(["agent", "--no-kube", "--frequency", "99", "--window", "10s"])
        .arg("--cgroup-root")
        .arg(&base)
        .arg("--store")
        .arg(&store)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .stderr(Stdio::piped())
        .spawn()
        .context("starting profiler agent")?;
    let pid = agent.id();
    let up = Instant::now();
    while http_get(port, "/healthz").is_none() {
        if up.elapsed() > Duration::from_secs(30) || agent.try_wait()?.is_some() {
            let _ = agent.kill();
            let mut e = String::new();
            if let Some(s) = agent.stderr.as_mut() {
                let _ = s.read_to_string(&mut e);
            }
            bail!("the agent did not come up: {e}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Let it find every container before measuring.
    std::thread::sleep(Duration::from_secs(3));
    let targets = http_get(port, "/metrics")
        .map(|m| metric(&m, "profiler_agent_targets"))
        .unwrap_or(0.0);
    let hz = 100.0; // USER_HZ
    let t0 = cpu_ticks(pid).context("reading the agent's CPU time")?;
    let w0 = Instant::now();
    let mut peak_rss = 0u64;
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    while w0.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_secs(1));
        peak_rss = peak_rss.max(status_kib(pid, "VmRSS:").unwrap_or(0));
        if progress {
            eprint!("\ragent bench: {:>3}/{seconds}s", w0.elapsed().as_secs());
        }
    }
    if progress {
        eprintln!();
    }
    let t1 = cpu_ticks(pid).context("reading the agent's CPU time")?;
    let wall = w0.elapsed().as_secs_f64();
    let hwm = status_kib(pid, "VmHWM:").unwrap_or(0).max(peak_rss);
    let metrics = http_get(port, "/metrics").unwrap_or_default();
    // SAFETY: signalling the agent this bench started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = agent.wait()?;
    let _ = std::fs::write(
        "/proc/sys/kernel/bpf_stats_enabled",
        stats_before.as_bytes(),
    );
    let _ = std::fs::remove_dir_all(&store);
    drop(owned);

    let cpu_pct = (t1 - t0) as f64 / hz / wall * 100.0;
    let samples = metric(&metrics, "profiler_agent_samples_total");
    let dropped = metric(&metrics, "profiler_agent_dropped_samples_total");
    let windows = metric(&metrics, "profiler_agent_windows_written_total");
    let ns = metric(&metrics, "profiler_agent_bpf_run_time_ns_total");
    let runs = metric(&metrics, "profiler_agent_bpf_runs_total");
    println!("bench agent: {PROCESSES} busy processes in {PODS} pod cgroups, 99 Hz, {wall:.0} s measured");
    println!("  targets found           {targets:.0}");
    println!("  agent CPU               {cpu_pct:.2}% of one core   (goal <= 2%)");
    println!(
        "  agent peak RSS          {:.1} MiB            (goal <= 64 MiB)",
        hwm as f64 / 1024.0
    );
    println!("  samples attributed      {samples:.0} (dropped {dropped:.0}), windows written {windows:.0}");
    if runs > 0.0 {
        println!(
            "  in-kernel cost          {:.2} us per run of cpu_sample ({runs:.0} runs)",
            ns / runs / 1000.0
        );
    }
    println!("  agent exit              {status}");
    Ok(())
}

/// The agent's CPU % of a core, peak RSS (KiB) and last `/metrics`.
type AgentMeasure = (f64, u64, String);

/// Alternated run pairs (with and without the agent) of the Go part, by
/// default; `$AGENT_BENCH_PAIRS` overrides it (more pairs, a steadier median).
const GO_PAIRS: usize = 3;

/// The number of alternated pairs of the Go part.
fn go_pairs() -> usize {
    std::env::var("AGENT_BENCH_PAIRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(GO_PAIRS)
}

/// One run of the Go part: the 20 pods' workloads for `seconds` (after a
/// 5 s start delay), with or without the agent. Returns pod 0's CPU-bound
/// loop rate and, with the agent, its CPU % of a core over the load, its
/// peak RSS (KiB) and its last `/metrics`.
fn go_run(
    release: &Path,
    bins: &Path,
    containers: &[PathBuf],
    base: &Path,
    seconds: u64,
    with_agent: bool,
) -> Result<(f64, Option<AgentMeasure>)> {
    let mut agent = None;
    let store = std::env::temp_dir().join(format!(
        "profiler-bench-agent-go-store-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&store);
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    if with_agent {
        let mut a = Command::new(release.join("profiler"))
            .args(["agent", "--no-kube", "--frequency", "99", "--window", "10s"])
            .args(["--rescan", "1s"])
            .args(["--profile", "cpu,goroutines,allocs,calls"])
            .args([
                "--count",
                "main.countedTarget",
                "--allocs-set-rate",
                "524288",
            ])
            .arg("--cgroup-root")
            .arg(base)
            .arg("--store")
            .arg(&store)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stderr(Stdio::null())
            .spawn()
            .context("starting profiler agent")?;
        let up = Instant::now();
        while http_get(port, "/healthz").is_none() {
            if up.elapsed() > Duration::from_secs(30) || a.try_wait()?.is_some() {
                let _ = a.kill();
                bail!("the agent did not come up");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        agent = Some(a);
    }
    let mut pods = Owned::default();
    for (i, cg) in containers.iter().enumerate() {
        let child = Command::new(bins.join("goruntime"))
            .args(["-work", "-work-tick", "200ms", "-start-delay", "5s"])
            .args(["-duration", &format!("{seconds}s")])
            .arg(format!("-spin={}", i == 0))
            .stdout(if i == 0 {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .spawn()
            .context("starting the goruntime workload")?;
        std::fs::write(cg.join("cgroup.procs"), child.id().to_string())
            .with_context(|| format!("moving a workload into {}", cg.display()))?;
        pods.children.push(child);
    }
    // The load starts after the 5 s delay: measure the agent from there.
    std::thread::sleep(Duration::from_secs(5));
    let hz = 100.0; // USER_HZ
    let pid = agent.as_ref().map(|a: &Child| a.id());
    let t0 = pid.and_then(cpu_ticks);
    let w0 = Instant::now();
    let mut peak = 0u64;
    let mut out = String::new();
    let mut first = pods.children[0].stdout.take().context("pod 0's stdout")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = first.read_to_string(&mut s);
        s
    });
    while pods.children[0].try_wait()?.is_none() {
        if w0.elapsed() > Duration::from_secs(seconds + 60) {
            bail!("pod 0's workload did not finish");
        }
        std::thread::sleep(Duration::from_millis(500));
        if let Some(p) = pid {
            peak = peak.max(status_kib(p, "VmRSS:").unwrap_or(0));
        }
    }
    out.push_str(&reader.join().unwrap_or_default());
    let wall = w0.elapsed().as_secs_f64();
    let rate: f64 = out
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("units_per_sec="))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no units_per_sec= in {out:?}"))?;
    let mut measured = None;
    if let (Some(mut a), Some(p), Some(t0)) = (agent, pid, t0) {
        let t1 = cpu_ticks(p).unwrap_or(t0);
        let hwm = status_kib(p, "VmHWM:").unwrap_or(0).max(peak);
        let metrics = http_get(port, "/metrics").unwrap_or_default();
        // SAFETY: signalling the agent this bench started.
        unsafe { libc::kill(p as i32, libc::SIGTERM) };
        let _ = a.wait();
        measured = Some(((t1 - t0) as f64 / hz / wall * 100.0, hwm, metrics));
    }
    drop(pods);
    let _ = std::fs::remove_dir_all(&store);
    Ok((rate, measured))
}

/// The Go part: 20 Go pods (one container each, the systemd and cgroupfs
/// layouts) running `goruntime -work` at 1/20 of the controller-like rates
/// each (together 1,000 goroutines/s, 10 MiB/s allocated, 2,000 counted
/// calls/s); pod 0 also runs a CPU-bound loop whose rate is the slowdown
/// measure. `GO_PAIRS` (or `$AGENT_BENCH_PAIRS`) alternated pairs of runs with and without the agent
/// (`--profile cpu,goroutines,allocs,calls --count main.countedTarget
/// --allocs-set-rate 524288`); prints the agent's CPU % of a core (mean),
/// peak RSS (max), and the workload slowdown (1 - median of the per-pair
/// with/without loop-rate ratios). Goals: CPU <= 2%, RSS <= 64 MiB,
/// slowdown <= 2%.
pub fn run_go(root: &Path, seconds: u64) -> Result<()> {
    crate::setup::setup(root)?;
    let bins = crate::workloads::build_workloads(root)?;
    let release = crate::build_release(root)?;
    let mount = cgroup2_mount()?;
    let base = mount.join(format!("profiler-bench-agent-go-{}", std::process::id()));
    let mut owned = Owned::default();
    std::fs::create_dir(&base).with_context(|| format!("creating {}", base.display()))?;
    owned.dirs.push(base.clone());
    let mut containers = Vec::new();
    for pod in 0..PODS {
        let uid = format!("{:08x}-0000-4000-8000-{:012x}", pod + 101, pod + 101);
        let cid = hex_id(1000 + pod);
        let rel = if pod.is_multiple_of(2) {
            format!(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{cid}.scope",
                uid.replace('-', "_")
            )
        } else {
            format!("kubepods/besteffort/pod{uid}/{cid}")
        };
        containers.push(owned.mkdirs(&base, &rel)?);
    }
    let mut ratios = Vec::new();
    let mut cpu = Vec::new();
    let mut rss = 0u64;
    let mut last_metrics = String::new();
    let pairs = go_pairs();
    for pair in 0..pairs {
        let order = if pair % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        let mut rates = [0.0f64; 2];
        for with in order {
            let (rate, m) = go_run(&release, &bins, &containers, &base, seconds, with)?;
            rates[usize::from(with)] = rate;
            if let Some((c, hwm, metrics)) = m {
                cpu.push(c);
                rss = rss.max(hwm);
                last_metrics = metrics;
            }
            eprintln!(
                "agent bench (go): pair {}/{pairs} {} agent: loop {rate:.1} units/s",
                pair + 1,
                if with { "with" } else { "without" }
            );
        }
        ratios.push(rates[1] / rates[0]);
    }
    drop(owned);
    ratios.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let median = ratios[ratios.len() / 2];
    let cpu_mean = cpu.iter().sum::<f64>() / cpu.len().max(1) as f64;
    let m = |name: &str| metric(&last_metrics, name);
    let series = |label: &str| {
        last_metrics
            .lines()
            .find(|l| {
                !l.starts_with('#')
                    && !l.starts_with("profiler_agent_map_capacity")
                    && l.contains(label)
            })
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or("?")
            .to_string()
    };
    println!(
        "bench agent (go): {PODS} Go pods, together 1,000 goroutines/s, 10 MiB/s, 2,000 counted calls/s; \
         --profile cpu,goroutines,allocs,calls; {pairs} alternated pairs of {seconds} s runs"
    );
    println!(
        "  agent CPU               {cpu_mean:.2}% of one core (runs: {})   (goal <= 2%)",
        cpu.iter()
            .map(|c| format!("{c:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  agent peak RSS          {:.1} MiB            (goal <= 64 MiB)",
        rss as f64 / 1024.0
    );
    println!(
        "  workload slowdown       {:.2}% (median with/without loop rate {median:.4}; pairs {})   (goal <= 2%)",
        (1.0 - median) * 100.0,
        ratios
            .iter()
            .map(|r| format!("{r:.4}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  go binaries / processes / uprobes   {} / {} / {}",
        series("map=\"go_binaries\""),
        series("map=\"go_processes\""),
        series("map=\"go_uprobes\"")
    );
    println!(
        "  go events (last run)    calls {} goroutines_created {} allocs {} not_target {}; windows written {:.0}",
        series("counter=\"calls\""),
        series("counter=\"goroutines_created\""),
        series("counter=\"allocs\""),
        series("counter=\"not_target\""),
        m("profiler_agent_windows_written_total")
    );
    Ok(())
}
