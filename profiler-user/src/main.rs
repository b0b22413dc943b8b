//! `profiler`: eBPF CPU profiler writing pprof.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use profiler_user::{
    error::exit,
    record::{record, RecordOptions},
};

#[derive(Parser)]
#[command(
    name = "profiler",
    version,
    about = "eBPF CPU profiler for processes, cgroups and commands; writes pprof"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Sample CPU stacks and write a gzip'd pprof profile.
    #[command(after_help = RECORD_EXAMPLES)]
    Record(RecordArgs),
}

const RECORD_EXAMPLES: &str = "\
Examples:
  profiler record --pid 1234 --duration 30s -o cpu.pb.gz
  profiler record --cgroup /sys/fs/cgroup/unified/kubepods.slice/pod123 --duration 1m
  profiler record -o cpu.pb.gz --flamegraph cpu.svg -- ./my-controller --workers 4
  profiler record --pid 1234 --duration 1m --profile cpu,goroutines,allocs,calls \
      --count-preset go-controller -o out/      # out/{cpu,goroutines,allocs,calls}.pb.gz
  go tool pprof -top cpu.pb.gz

Stops after --duration, on Ctrl-C/SIGTERM, or when the launched command exits;
the profile is written in every case.

Exit codes: 0 ok, 1 failure, 2 usage, 3 permission (needs root or CAP_BPF+CAP_PERFMON),
4 pid or cgroup not found, 5 kernel lacks a feature, 6 command could not start,
7 output could not be written.";

#[derive(clap::Args)]
struct RecordArgs {
    /// Process to profile (repeatable); its children are followed.
    #[arg(long = "pid", value_name = "PID")]
    pids: Vec<u32>,
    /// cgroup v2 directory to profile (absolute, or relative to the cgroup2 mount).
    #[arg(long, value_name = "PATH")]
    cgroup: Option<PathBuf>,
    /// Stop after this long (e.g. 30s, 2m); default: until Ctrl-C or the command exits.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    duration: Option<Duration>,
    /// Samples per second per CPU.
    #[arg(long, default_value_t = 99, value_parser = clap::value_parser!(u64).range(1..=10000))]
    frequency: u64,
    /// Output profile (gzip'd pprof).
    #[arg(short, long, default_value = "profile.pb.gz", value_name = "FILE")]
    output: PathBuf,
    /// Also write a flame graph SVG.
    #[arg(long, value_name = "FILE")]
    flamegraph: Option<PathBuf>,
    /// Hide the progress line.
    #[arg(long, short)]
    quiet: bool,
    /// Profile types (comma-separated or repeated): cpu, goroutines, allocs,
    /// calls. With more than one, -o is a directory holding <type>.pb.gz.
    #[arg(long = "profile", value_delimiter = ',', default_value = "cpu", value_name = "TYPES",
          value_parser = ["cpu", "goroutines", "allocs", "calls"])]
    profiles: Vec<String>,
    /// Count calls of this Go function for the calls profile (repeatable;
    /// globs allowed, e.g. 'net/http.(*Client).do' or '*.Reconcile').
    #[arg(long = "count", value_name = "SYMBOL")]
    count: Vec<String>,
    /// A named set of functions to count (go-controller: client-go REST
    /// requests, net/http.(*Client).do, reconciles).
    #[arg(long = "count-preset", value_name = "NAME", value_parser = ["go-controller"])]
    count_preset: Option<String>,
    /// allocs: probe every allocation (runtime.mallocgc; exact but costly)
    /// instead of Go's own samples (free, empty when MemProfileRate is 0).
    #[arg(long)]
    allocs_exact: bool,
    /// allocs: when a target's runtime.MemProfileRate is 0, write this rate
    /// (bytes, e.g. 524288) into it so Go samples again; undone at the end.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    allocs_set_rate: Option<u64>,
    /// Command to launch and profile.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("profiler: cannot start the runtime: {e}");
            return ExitCode::from(exit::FAILURE as u8);
        }
    };
    match cli.command {
        Cmd::Record(a) => {
            let calls = a.profiles.iter().any(|p| p == "calls");
            let counting = !a.count.is_empty() || a.count_preset.is_some();
            if calls != counting {
                eprintln!(
                    "profiler: {}",
                    if calls {
                        "--profile calls needs --count SYMBOL or --count-preset NAME"
                    } else {
                        "--count/--count-preset need --profile calls (e.g. --profile cpu,calls)"
                    }
                );
                return ExitCode::from(exit::USAGE as u8);
            }
            let opts = RecordOptions {
                pids: a.pids,
                cgroup: a.cgroup,
                duration: a.duration,
                frequency: a.frequency,
                output: a.output.clone(),
                flamegraph: a.flamegraph,
                command: a.command,
                drain_interval: Duration::from_secs(1),
                progress: !a.quiet,
                cpu: a.profiles.iter().any(|p| p == "cpu"),
                go: profiler_user::go::GoOptions {
                    profiles: profiler_user::go::GoProfiles {
                        goroutines: a.profiles.iter().any(|p| p == "goroutines"),
                        allocs: a.profiles.iter().any(|p| p == "allocs"),
                        calls: a.profiles.iter().any(|p| p == "calls"),
                    },
                    count: a.count,
                    preset: a.count_preset,
                    alloc_exact: a.allocs_exact,
                    alloc_set_rate: a.allocs_set_rate,
                },
            };
            match rt.block_on(record(opts)) {
                Ok(s) => {
                    let lost: Vec<String> = s
                        .counters
                        .iter()
                        .filter(|(n, _)| *n != "samples" && *n != "frameless_fixed")
                        .chain(s.user_losses.iter())
                        .filter(|(_, v)| *v > 0)
                        .map(|(n, v)| format!("{n}={v}"))
                        .collect();
                    eprintln!(
                        "profiler: {} samples from {} process(es) in {:.1}s; lost: {}; wrote {}",
                        s.samples,
                        s.processes,
                        s.elapsed.as_secs_f64(),
                        if lost.is_empty() {
                            "none".to_string()
                        } else {
                            lost.join(" ")
                        },
                        s.outputs
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    for line in &s.go_summary {
                        eprintln!("profiler: {line}");
                    }
                    if let Some((ns, runs)) = s.prog_stats.filter(|(_, r)| *r > 0) {
                        eprintln!(
                            "profiler: cpu_sample program: runs={runs} run_time_ns={ns} ns_per_run={}",
                            ns / runs
                        );
                    }
                    ExitCode::from(exit::OK as u8)
                }
                Err(e) => {
                    eprintln!("profiler: {e}");
                    ExitCode::from(e.exit_code() as u8)
                }
            }
        }
    }
}
