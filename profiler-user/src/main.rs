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
    /// Profile this node's pods continuously (the DaemonSet mode): one pprof
    /// per pod, container and window in a local store, served over HTTP.
    #[command(after_help = AGENT_EXAMPLES)]
    Agent(AgentArgs),
    /// Fetch a pod's merged profile over a time range from profiler agents.
    #[command(after_help = FETCH_EXAMPLES)]
    Fetch(FetchArgs),
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

const AGENT_EXAMPLES: &str = "\
Examples:
  # In a cluster (DaemonSet; see deploy/kubernetes): every pod on this node
  profiler agent --node-name \"$NODE_NAME\" --listen 0.0.0.0:7070 --token-file /var/run/profiler/token
  # Only the controller's pods, 30 s windows
  profiler agent --namespace my-system --selector app=my-controller --window 30s
  # Outside a cluster: pods found from kubelet's cgroups alone (pod = pod uid)
  profiler agent --no-kube --store /tmp/profiles
  # Then, from CI:
  profiler fetch --agent http://node-a:7070 --pod my-system/my-controller-0 --from -10m -o cpu.pb.gz

API (see README): GET /healthz, /metrics (Prometheus), /targets (JSON),
/profiles?namespace=&pod=&container=&type=cpu&from=&to= (merged gzip'd pprof).
Windows are aligned to the wall clock; SIGTERM/SIGINT writes the partial window.

Exit codes: 0 ok, 1 failure (API, Kubernetes client), 2 usage, 3 permission
(needs root or CAP_BPF+CAP_PERFMON), 5 kernel lacks a feature, 7 store not writable.";

/// `profiler agent` flags.
#[derive(clap::Args)]
struct AgentArgs {
    /// This node's name: the pod watch only sees pods scheduled here.
    #[arg(long, env = "NODE_NAME", value_name = "NAME")]
    node_name: Option<String>,
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:7070", value_name = "ADDR")]
    listen: std::net::SocketAddr,
    /// File holding the API's bearer token (required when --listen is not
    /// a loopback address).
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Store directory (one pprof per pod, container, type and window).
    #[arg(long, default_value = "/var/lib/profiler-agent", value_name = "DIR")]
    store: PathBuf,
    /// Window length (e.g. 60s, 5m).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    window: Duration,
    /// Delete windows older than this.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration, value_name = "DURATION")]
    retention_age: Duration,
    /// Keep the store under this size (e.g. 1GiB, 500MiB); oldest first.
    #[arg(long, default_value = "1GiB", value_parser = parse_size, value_name = "SIZE")]
    retention_size: u64,
    /// Samples per second per CPU.
    #[arg(long, default_value_t = 99, value_parser = clap::value_parser!(u64).range(1..=10000))]
    frequency: u64,
    /// cgroup v2 root holding kubelet's hierarchy (default: the cgroup2 mount).
    #[arg(long, value_name = "PATH")]
    cgroup_root: Option<PathBuf>,
    /// Only pods in this namespace (repeatable).
    #[arg(long = "namespace", value_name = "NS")]
    namespaces: Vec<String>,
    /// Only pods whose labels match (kubectl syntax: app=foo,tier!=db).
    #[arg(long, value_name = "SELECTOR")]
    selector: Option<String>,
    /// Only containers with this name (repeatable).
    #[arg(long = "container", value_name = "NAME")]
    containers: Vec<String>,
    /// Only processes with this name (comm or executable file name; repeatable).
    #[arg(long = "process-name", value_name = "NAME")]
    process_names: Vec<String>,
    /// Do not contact the Kubernetes API: name pods by uid from their cgroups.
    #[arg(long)]
    no_kube: bool,
    /// How often the cgroup tree is scanned for new and gone containers.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    rescan: Duration,
}

/// Sizes like `1GiB`, `500MiB`, `10M`, `4096`.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}`: expected a size like 1GiB, 500MiB or 4096"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        u => return Err(format!("`{s}`: unknown unit `{u}` (use KiB, MiB, GiB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}`: too large"))
}

fn run_agent(a: AgentArgs) -> ExitCode {
    use profiler_user::agent::{self, store::Retention, targets::Selection, AgentOptions};
    let token = match &a.token_file {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
            Ok(_) => {
                eprintln!("profiler: --token-file {}: the file is empty", p.display());
                return ExitCode::from(exit::USAGE as u8);
            }
            Err(e) => {
                eprintln!("profiler: --token-file {}: {e}", p.display());
                return ExitCode::from(exit::USAGE as u8);
            }
        },
        None => None,
    };
    let selector = match a.selector.as_deref().map(str::parse).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("profiler: --selector: {e}");
            return ExitCode::from(exit::USAGE as u8);
        }
    };
    let opts = AgentOptions {
        node_name: a.node_name,
        listen: a.listen,
        token,
        store: a.store,
        window: a.window,
        retention: Retention {
            max_age: a.retention_age,
            max_bytes: a.retention_size,
        },
        frequency: a.frequency,
        cgroup_root: a.cgroup_root,
        selection: Selection {
            namespaces: a.namespaces,
            selector,
            containers: a.containers,
            process_names: a.process_names,
        },
        kube: !a.no_kube,
        rescan: a.rescan,
    };
    // Two workers: the API and the pod watch run beside the sampling loop.
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2);
    let rt = match runtime(builder) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(agent::run(opts)) {
        Ok(s) => {
            eprintln!(
                "profiler agent: stopped after {:.1}s; wrote {} window profile(s), {} samples, {} container(s) seen",
                s.elapsed.as_secs_f64(),
                s.windows,
                s.samples,
                s.targets_seen
            );
            ExitCode::from(exit::OK as u8)
        }
        Err(e) => {
            eprintln!("profiler agent: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

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
    /// calls: `full` takes the whole stack on every counted call (≈1.3 µs
    /// per call here); `caller` counts exactly per immediate caller and
    /// samples the stacks above it (≈1.1 µs per call, flat in stack depth).
    #[arg(long, default_value = "full", value_parser = ["full", "caller"], value_name = "MODE")]
    count_stacks: String,
    /// Command to launch and profile.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

const FETCH_EXAMPLES: &str = "\
Examples:
  profiler fetch --agent http://node-a:7070 --agent http://node-b:7070 \\
      --pod my-system/my-controller-0 --from -10m -o cpu.pb.gz --token-file token
  profiler fetch --agent http://127.0.0.1:7070 --pod 0f3c2a9e-... --container manager \\
      --from 2026-11-27T16:00:00Z --to 2026-11-27T16:05:00Z -o cpu.pb.gz
  go tool pprof -top cpu.pb.gz

Every agent is asked; an agent without the pod (404) is fine, but at least one
must have it. The answers are merged into one profile. Times: RFC 3339, unix
seconds, now, or -DURATION (relative to now, resolved once by fetch).

Exit codes: 0 ok, 1 failure (agent unreachable, 401, no windows in range),
2 usage, 4 no agent knows the pod, 7 output could not be written.";

/// `profiler fetch` flags.
#[derive(clap::Args)]
struct FetchArgs {
    /// Agent base URL, http(s)://HOST:PORT (repeatable: one per node).
    #[arg(long = "agent", value_name = "URL", required = true)]
    agents: Vec<String>,
    /// Pod: NAMESPACE/NAME, NAME, or a pod uid.
    #[arg(long, value_name = "POD")]
    pod: String,
    /// Only this container (name or id); default: all containers of the pod.
    #[arg(long, value_name = "NAME")]
    container: Option<String>,
    /// Profile type.
    #[arg(long = "type", default_value = "cpu", value_name = "TYPE")]
    profile_type: String,
    /// Range start: RFC 3339, unix seconds, now, or -DURATION (e.g. -10m).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    from: String,
    /// Range end (default: now).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    to: Option<String>,
    /// Output profile (gzip'd pprof).
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// File holding the agents' bearer token.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Timeout of each agent's request.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    timeout: Duration,
    /// Use the agents that answered even if others failed (unreachable, 5xx).
    #[arg(long)]
    allow_partial: bool,
}

fn run_fetch(a: FetchArgs) -> ExitCode {
    let token = match &a.token_file {
        None => None,
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => Some(t.trim().to_owned()),
            Err(e) => {
                eprintln!(
                    "profiler: --token-file {}: {e} (check the path and permissions)",
                    p.display()
                );
                return ExitCode::from(exit::USAGE as u8);
            }
        },
    };
    let opts = profiler_user::fetch::FetchOptions {
        agents: a.agents,
        pod: a.pod,
        container: a.container,
        profile_type: a.profile_type,
        from: a.from,
        to: a.to,
        output: a.output,
        token,
        timeout: a.timeout,
        max_response_bytes: profiler_user::fetch::DEFAULT_MAX_RESPONSE_BYTES,
        allow_partial: a.allow_partial,
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
            ExitCode::from(exit::OK as u8)
        }
        Err(e) => {
            eprintln!("profiler: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// Builds the async runtime, or says why not (exit 1).
fn runtime(mut b: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    b.enable_all().build().map_err(|e| {
        eprintln!("profiler: cannot start the runtime: {e}");
        ExitCode::from(exit::FAILURE as u8)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let a = match cli.command {
        Cmd::Agent(a) => return run_agent(a),
        Cmd::Fetch(a) => return run_fetch(a),
        Cmd::Record(a) => a,
    };
    let rt = match runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    {
        {
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
                    count_stacks: if a.count_stacks == "caller" {
                        profiler_user::go::CountStacks::Caller
                    } else {
                        profiler_user::go::CountStacks::Full
                    },
                },
            };
            match rt.block_on(record(opts)) {
                Ok(s) => {
                    let lost: Vec<String> = s
                        .counters
                        .iter()
                        .filter(|(n, _)| {
                            !matches!(*n, "samples" | "frameless_fixed" | "filtered_out")
                        })
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
