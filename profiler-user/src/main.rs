//! `profiler`: eBPF CPU profiler writing pprof. Command-line glue: the
//! flags are defined in `profiler_user::cli`, the work is done by the
//! library.

use std::process::ExitCode;

use clap::Parser as _;
use profiler_user::{
    cli::{AgentArgs, Cli, Cmd, FetchArgs, RecordArgs},
    error::{exit, report},
    record::record,
};

fn code(c: i32) -> ExitCode {
    ExitCode::from(c as u8)
}

/// A usage error found after parsing: one line, exit 2.
fn usage(msg: &str) -> ExitCode {
    eprintln!("profiler: {msg}");
    code(exit::USAGE)
}

fn run_agent(a: AgentArgs) -> ExitCode {
    let opts = match a.options() {
        Ok(o) => o,
        Err(msg) => return usage(&msg),
    };
    // Two workers: the API and the pod watch run beside the sampling loop.
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2);
    let rt = match runtime(builder) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(profiler_user::agent::run(opts)) {
        Ok(s) => {
            eprintln!(
                "profiler agent: stopped after {:.1}s; wrote {} window profile(s), {} samples, {} container(s) seen",
                s.elapsed.as_secs_f64(),
                s.windows,
                s.samples,
                s.targets_seen
            );
            code(exit::OK)
        }
        Err(e) => {
            eprintln!("profiler agent: {}", report(&e));
            code(e.exit_code())
        }
    }
}

fn run_fetch(a: FetchArgs) -> ExitCode {
    let opts = match a.options() {
        Ok(o) => o,
        Err(msg) => return usage(&msg),
    };
    match profiler_user::fetch::fetch(&opts) {
        Ok(s) => {
            for (agent, why) in &s.failed {
                eprintln!("profiler: warning: agent {agent}: {why}");
            }
            eprintln!(
                "profiler: {} window(s), {} samples from {} agent(s) ({} without the pod); wrote {} ({} bytes)",
                s.windows,
                s.samples,
                s.answered.len(),
                s.unknown_pod.len() + s.no_windows.len(),
                s.output.display(),
                s.bytes_written
            );
            code(exit::OK)
        }
        Err(e) => {
            eprintln!("profiler: {e}");
            code(e.exit_code())
        }
    }
}

fn run_record(a: RecordArgs) -> ExitCode {
    let opts = match a.options() {
        Ok(o) => o,
        Err(msg) => return usage(&msg),
    };
    let rt = match runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(record(opts)) {
        Ok(s) => {
            let lost: Vec<String> = s
                .counters
                .iter()
                .filter(|(n, _)| !matches!(*n, "samples" | "frameless_fixed" | "filtered_out"))
                .chain(s.user_losses.iter())
                .filter(|(_, v)| *v > 0)
                .map(|(n, v)| format!("{n}={v}"))
                .collect();
            let sampled = if s.cpu {
                format!("{} samples from {} process(es)", s.samples, s.processes)
            } else {
                "no CPU sampling (--profile without cpu)".to_string()
            };
            eprintln!(
                "profiler: {sampled} in {:.1}s; lost: {}; wrote {}",
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
            for line in s.go_summary.iter().chain(&s.memory_summary) {
                eprintln!("profiler: {line}");
            }
            if let Some((ns, runs)) = s.prog_stats.filter(|(_, r)| *r > 0) {
                let counter = |name: &str| {
                    s.counters
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map_or(0, |c| c.1)
                };
                eprintln!(
                    "profiler: cpu_sample program: runs={runs} run_time_ns={ns} ns_per_run={} samples={} filtered_out={}",
                    ns / runs,
                    counter("samples"),
                    counter("filtered_out")
                );
            }
            code(exit::OK)
        }
        Err(e) => {
            eprintln!("profiler: {}", report(&e));
            code(e.exit_code())
        }
    }
}

/// Builds the async runtime, or says why not (exit 1).
fn runtime(mut b: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    b.enable_all().build().map_err(|e| {
        eprintln!("profiler: cannot start the runtime: {e}");
        code(exit::FAILURE)
    })
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::Record(a) => run_record(a),
        Cmd::Agent(a) => run_agent(a),
        Cmd::Fetch(a) => run_fetch(a),
    }
}
