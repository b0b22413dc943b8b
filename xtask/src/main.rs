//! `cargo xtask`: set-up, demo, tests and benchmarks of the workspace.
//!
//! * `setup`: install what a fresh machine lacks (idempotent).
//! * `demo`: record the bundled Go demo for 10 s into `demo-out/`.
//! * `test`: build everything and run the whole suite (eBPF tests included).
//! * `bench overhead|gate-accuracy|diff-vs-pprof|go-probes|scenarios|agent|export|lock`: print measured figures.

mod bench_agent;
mod bench_diff;
mod bench_export;
mod bench_gate;
mod bench_go;
mod bench_lock;
mod bench_overhead;
mod bench_scenarios;
mod owned;
mod setup;
mod workloads;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Project tasks: setup, demo, test, bench"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the nightly rust-src, bpf-linker, Go and bpftool; mount tracefs.
    Setup,
    /// Build workloads only (tests/workloads/bin).
    BuildWorkloads,
    /// Record the demo workload for 10 s into demo-out/ and print the top functions.
    Demo,
    /// Build and run the whole test suite (needs root for the eBPF tests).
    Test {
        /// Extra arguments passed to every `cargo test` run (after `--`).
        #[arg(last = true)]
        rest: Vec<String>,
    },
    /// Benchmarks that print measured figures.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Slowdown of a Go workload under `profiler record` at 99 Hz, profiler CPU and RSS.
    Overhead {
        /// Runs per side (alternated).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Seconds per run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// False-fail and detection rates of `profdiff gate`: generated profiles, then the regress workload recorded.
    GateAccuracy,
    /// `profdiff gate` and `diff` against `go tool pprof -top -diff_base` on the Pyroscope pair.
    DiffVsPprof,
    /// Slowdown and per-event cost of the Go runtime probes (goroutines, allocs, calls).
    GoProbes,
    /// The controller workbench matrix: detection and false-alarm rates per variant.
    Scenarios,
    /// `profiler agent`'s own CPU and peak RSS: 50 busy processes in 20 pod cgroups at 99 Hz.
    Agent {
        /// Seconds measured.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// What the agent profiles: `cpu` (50 busy processes, CPU only),
        /// `go` (20 Go pods at controller-like rates, all four profile
        /// types, with alternated runs without the agent for the workload
        /// slowdown), or `both`.
        #[arg(long, value_enum, default_value_t = bench_agent::Part::Cpu)]
        part: bench_agent::Part,
    },
    /// CPU that `profiler agent --export` adds (every window to a loopback Pyroscope-protocol server).
    Export {
        /// Runs per side (alternated).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Seconds measured per run.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// BPF program time of the contention probes per wait and of the off-CPU program per switch.
    Lock {
        /// Rounds.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
}

/// The workspace root (parent of xtask/).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Run a command, failing with its name when it does not succeed.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{:?} failed with {status}", cmd);
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Build the release binaries used by the demo and benchmarks; returns
/// target/release.
pub fn build_release(root: &Path) -> Result<PathBuf> {
    run(cargo()
        .current_dir(root)
        .args(["build", "--release", "-p", "profiler-user", "-p", "diff"])
        .env("PATH", setup::path_with_tools()))?;
    Ok(target_dir(root).join("release"))
}

/// A release `profiler` built with a benchmark-only cargo `feature`,
/// copied to `out` so the binary measured is the one built here whatever
/// builds next (shipped builds carry no such knobs).
pub fn build_bench_profiler(root: &Path, feature: &str, out: &Path) -> Result<()> {
    run(cargo()
        .current_dir(root)
        .args([
            "build",
            "--release",
            "-p",
            "profiler-user",
            "--features",
            feature,
        ])
        .env("PATH", setup::path_with_tools()))?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::copy(target_dir(root).join("release/profiler"), out)
        .with_context(|| format!("copying the {feature} profiler to {}", out.display()))?;
    Ok(())
}

/// The Cargo target directory.
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

fn demo(root: &Path) -> Result<()> {
    setup::setup(root)?;
    let bins = workloads::build_workloads(root)?;
    let release = build_release(root)?;
    let out = root.join("demo-out");
    std::fs::create_dir_all(&out)?;
    println!("demo: starting the demo workload (main.hotParse, main.hotHash)");
    let mut workload = Command::new(bins.join("demo"))
        .args(["-duration", "60s"])
        .spawn()
        .context("starting the demo workload")?;
    let pid = workload.id();
    let result = (|| -> Result<()> {
        run(Command::new(release.join("profiler")).args([
            "record",
            "--pid",
            &pid.to_string(),
            "--duration",
            "10s",
            "-o",
            out.join("cpu.pb.gz").to_str().unwrap(),
            "--flamegraph",
            out.join("cpu.svg").to_str().unwrap(),
        ]))?;
        println!("\ndemo: top functions (profdiff top demo-out/cpu.pb.gz):");
        run(Command::new(release.join("profdiff")).args([
            "top",
            out.join("cpu.pb.gz").to_str().unwrap(),
            "-n",
            "10",
        ]))?;
        println!(
            "\ndemo: wrote {} and {}; open with `go tool pprof -top {}`",
            out.join("cpu.pb.gz").display(),
            out.join("cpu.svg").display(),
            out.join("cpu.pb.gz").display()
        );
        Ok(())
    })();
    // We started the workload: stop it by its pid.
    let _ = workload.kill();
    let _ = workload.wait();
    result
}

fn test(root: &Path, rest: &[String]) -> Result<()> {
    setup::setup(root)?;
    let bins = workloads::build_workloads(root)?;
    let path = setup::path_with_tools();
    run(cargo()
        .current_dir(root)
        .args(["build", "--workspace", "--bins"])
        .env("PATH", &path))?;
    let debug = target_dir(root).join("debug");
    let envs = [
        ("PROFILER_BIN", debug.join("profiler")),
        ("PROFDIFF_BIN", debug.join("profdiff")),
        ("WORKLOADS_BIN", bins.clone()),
        (
            "GO",
            setup::go_binary().unwrap_or_else(|| PathBuf::from("go")),
        ),
    ];
    // Library and CLI tests (no root needed), in parallel.
    let mut c = cargo();
    c.current_dir(root)
        .args([
            "test",
            "--workspace",
            "--exclude",
            "integration-tests",
            "--exclude",
            "profiler-user",
        ])
        .env("PATH", &path)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_os_str())));
    if !rest.is_empty() {
        c.arg("--").args(rest);
    }
    run(&mut c)?;
    // eBPF tests (profiler-user's Go-probe tests and the end-to-end suite):
    // one at a time, so CPU shares and probe counts are not skewed by other
    // tests competing for the two cores.
    let mut c = cargo();
    c.current_dir(root)
        .args([
            "test",
            "-p",
            "profiler-user",
            "-p",
            "integration-tests",
            "--",
            "--test-threads=1",
        ])
        .args(rest)
        .env("PATH", &path)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_os_str())));
    run(&mut c)?;
    println!("xtask test: all test runs passed");
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let root = root();
    let result = match cli.cmd {
        Cmd::Setup => setup::setup(&root),
        Cmd::BuildWorkloads => workloads::build_workloads(&root).map(|_| ()),
        Cmd::Demo => demo(&root),
        Cmd::Test { rest } => test(&root, &rest),
        Cmd::Bench { which } => match which {
            Bench::Overhead { runs, seconds } => bench_overhead::run(&root, runs, seconds),
            Bench::GateAccuracy => bench_gate::gate_accuracy(&root),
            Bench::DiffVsPprof => bench_diff::diff_vs_pprof(&root),
            Bench::GoProbes => bench_go::run(&root),
            Bench::Scenarios => bench_scenarios::run(&root),
            Bench::Agent { seconds, part } => bench_agent::run_part(&root, seconds, part),
            Bench::Export { runs, seconds } => bench_export::run(&root, runs, seconds),
            Bench::Lock { runs } => bench_lock::run(&root, runs),
        },
    };
    if let Err(e) = result {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}
