//! The `profiler` command line (clap definitions), shared by the binary
//! (`src/main.rs`, which only runs what is parsed here) and by tests that
//! check manifests and scripts against the real flags
//! (`clap::CommandFactory` on [`Cli`]).
//!
//! Parsing is the first step; [`RecordArgs::options`] and
//! [`AgentArgs::options`] validate what clap cannot (flag combinations,
//! files to read) into the library's option structs, with a one-line
//! message for exit code 2.

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};

use crate::go::CountStacks;

/// `profiler`: the whole command line.
#[derive(Parser, Debug)]
#[command(
    name = "profiler",
    version,
    about = "eBPF CPU profiler for processes, cgroups and commands; writes pprof"
)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Cmd,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
// Parsed once at start-up: the agent's many flags cost nothing boxed or not.
#[allow(clippy::large_enum_variant)]
pub enum Cmd {
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

/// Examples and exit codes after `profiler record --help`.
pub const RECORD_EXAMPLES: &str = "\
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

/// Examples after `profiler agent --help`.
pub const AGENT_EXAMPLES: &str = "\
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
#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// This node's name: the pod watch only sees pods scheduled here.
    #[arg(long, env = "NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:7070", value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// File holding the API's bearer token (required when --listen is not
    /// a loopback address).
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Store directory (one pprof per pod, container, type and window).
    #[arg(long, default_value = "/var/lib/profiler-agent", value_name = "DIR")]
    pub store: PathBuf,
    /// Window length (e.g. 60s, 5m).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub window: Duration,
    /// Delete windows older than this.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub retention_age: Duration,
    /// Keep the store under this size (e.g. 1GiB, 500MiB); oldest first.
    #[arg(long, default_value = "1GiB", value_parser = parse_size, value_name = "SIZE")]
    pub retention_size: u64,
    /// Samples per second per CPU [default: 99]; only with the cpu profile
    /// type (without it no CPU sampler runs).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10000))]
    pub frequency: Option<u64>,
    /// cgroup v2 root holding kubelet's hierarchy (default: the cgroup2 mount).
    #[arg(long, value_name = "PATH")]
    pub cgroup_root: Option<PathBuf>,
    /// Only pods in this namespace (repeatable).
    #[arg(long = "namespace", value_name = "NS")]
    pub namespaces: Vec<String>,
    /// Only pods whose labels match (kubectl syntax: app=foo,tier!=db).
    #[arg(long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Only containers with this name (repeatable).
    #[arg(long = "container", value_name = "NAME")]
    pub containers: Vec<String>,
    /// Only processes with this name (comm or executable file name; repeatable).
    #[arg(long = "process-name", value_name = "NAME")]
    pub process_names: Vec<String>,
    /// Do not contact the Kubernetes API: name pods by uid from their cgroups.
    #[arg(long)]
    pub no_kube: bool,
    /// How often the cgroup tree is scanned for new and gone containers.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub rescan: Duration,
    /// Report rare events inside the eBPF programs (a map that filled, a
    /// stack walk that stopped at an unexpected frame, a failed attach-time
    /// check) on stderr, through aya-log. Off by default; costs nothing on
    /// the sampling path when off.
    #[arg(long)]
    pub ebpf_log: bool,
    /// Profile types and the Go probes' settings (as in `record`).
    #[command(flatten)]
    pub go: GoProfileArgs,
    /// Send every window to a profile server as it is stored (repeatable):
    /// `pyroscope=URL` (push API) or `parca=URL` (WriteRaw), optionally
    /// followed by `,token-file=PATH` (bearer token) and `,tenant=T` or
    /// `,tenant-file=PATH`. The store keeps a cursor per server, so an
    /// outage loses nothing within the retention.
    #[arg(long = "export", value_name = "KIND=URL[,OPTS]")]
    pub export: Vec<crate::agent::export::ExportTarget>,
    /// Timeout of one export request.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub export_timeout: Duration,
    /// Longest wait between export retries (exponential backoff with jitter).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub export_max_backoff: Duration,
    /// How often each container's memory (cgroup memory.current, anon,
    /// file; processes' RSS) is sampled for the `memory` profile type
    /// (one profile per container and window: the window's means); 0s
    /// turns memory profiles off.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub memory_interval: Duration,
}

/// Sizes like `1GiB`, `500MiB`, `10M`, `4096`.
pub fn parse_size(s: &str) -> Result<u64, String> {
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

/// `--frequency` when not given: samples per second per CPU.
pub const DEFAULT_FREQUENCY: u64 = 99;

/// The sampling frequency: `--frequency` or [`DEFAULT_FREQUENCY`]; giving
/// it without the cpu profile type is a usage error (no CPU sampler runs,
/// as `--count` without calls or `--offcpu-every` without offcpu are).
fn frequency(given: Option<u64>, cpu: bool) -> Result<u64, String> {
    match given {
        Some(_) if !cpu => Err(
            "--frequency needs --profile cpu (without cpu no CPU sampler runs; e.g. --profile cpu,calls)"
                .into(),
        ),
        Some(f) => Ok(f),
        None => Ok(DEFAULT_FREQUENCY),
    }
}

/// A profile type of `profiler record --profile`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum)]
pub enum ProfileType {
    /// CPU samples (the eBPF perf-event sampler).
    Cpu,
    /// Live goroutines by creation site (Go runtime uprobes).
    Goroutines,
    /// Allocations (Go runtime uprobes).
    Allocs,
    /// Exact call counts of `--count` symbols (Go runtime uprobes).
    Calls,
    /// Call durations of `--latency` symbols (Go uprobes on entry and
    /// every RET, paired per goroutine).
    Latency,
    /// Time goroutines wait on Go locks (sync.Mutex, RWMutex, WaitGroup
    /// slow paths), by the waiter's stack (Go runtime uprobes).
    Contention,
    /// Off-CPU time of the targets' threads by stack (sched_switch,
    /// sampled: see --offcpu-every).
    Offcpu,
    /// Live (in-use) Go heap by allocation stack, read from the runtime's
    /// own memory-profile buckets through /proc/PID/mem (no probes).
    Heap,
    /// Memory over time: the targets' cgroup memory (memory.current,
    /// anon, file) and each process's RSS, as means over the recording.
    Memory,
}

/// The profile-type flags shared by `profiler record` and `profiler agent`:
/// which types, which Go functions to count, and the allocation opt-ins.
#[derive(clap::Args, Debug, Clone)]
// The doc comments are the flags' help: `<type>.pb.gz` is text, not HTML.
#[allow(rustdoc::invalid_html_tags)]
pub struct GoProfileArgs {
    /// Profile types (comma-separated or repeated): cpu, goroutines, allocs,
    /// calls, latency, contention, offcpu, heap; record also: memory (the
    /// agent writes memory profiles by itself: --memory-interval). record:
    /// with more than one, -o is a directory holding <type>.pb.gz; agent: one profile per type,
    /// container and window.
    #[arg(
        long = "profile",
        value_delimiter = ',',
        default_value = "cpu",
        value_name = "TYPES"
    )]
    pub profiles: Vec<ProfileType>,
    /// Count calls of this Go function for the calls profile (repeatable;
    /// globs allowed, e.g. 'net/http.(*Client).do' or '*.Reconcile').
    #[arg(long = "count", value_name = "SYMBOL")]
    pub count: Vec<String>,
    /// A named set of functions to count (go-controller: client-go REST
    /// requests, net/http.(*Client).do, reconciles).
    #[arg(long = "count-preset", value_name = "NAME",
          value_parser = clap::builder::PossibleValuesParser::new(crate::go::PRESETS))]
    pub count_preset: Option<String>,
    /// allocs: probe every allocation (runtime.mallocgc; exact but costly)
    /// instead of Go's own samples (free, empty when MemProfileRate is 0).
    #[arg(long)]
    pub allocs_exact: bool,
    /// allocs: when a target's runtime.MemProfileRate is 0, write this rate
    /// (bytes, e.g. 524288) into it so Go samples again; undone at the end.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub allocs_set_rate: Option<u64>,
    /// calls: `full` takes the whole stack on every counted call (≈1.3 µs
    /// per call here); `caller` counts exactly per immediate caller and
    /// samples the stacks above it (≈1.1 µs per call, flat in stack depth).
    #[arg(long, value_enum, default_value_t = CountStacks::Full, value_name = "MODE")]
    pub count_stacks: CountStacks,
    /// Time calls of this Go function for the latency profile (repeatable;
    /// globs allowed, e.g. '*.Reconcile').
    #[arg(long = "latency", value_name = "SYMBOL")]
    pub latency: Vec<String>,
    /// A named set of functions to time (go-controller: Reconcile methods
    /// and client-go REST calls).
    #[arg(long = "latency-preset", value_name = "NAME",
          value_parser = clap::builder::PossibleValuesParser::new(crate::go::LATENCY_PRESETS))]
    pub latency_preset: Option<String>,
    /// offcpu: sample one context switch of a target thread in N (the
    /// sampled intervals are scaled by N; default 8); 1 measures every switch.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub offcpu_every: Option<u32>,
}

impl GoProfileArgs {
    /// Whether CPU is selected and the Go probes' options, or a usage
    /// error (exit 2) for a flag combination clap does not check.
    pub fn options(&self) -> Result<(bool, crate::go::GoOptions), String> {
        let has = |t: ProfileType| self.profiles.contains(&t);
        let calls = has(ProfileType::Calls);
        let counting = !self.count.is_empty() || self.count_preset.is_some();
        if calls && !counting {
            return Err("--profile calls needs --count SYMBOL or --count-preset NAME".into());
        }
        if counting && !calls {
            return Err(
                "--count/--count-preset need --profile calls (e.g. --profile cpu,calls)".into(),
            );
        }
        let timing = !self.latency.is_empty() || self.latency_preset.is_some();
        if has(ProfileType::Latency) && !timing {
            return Err("--profile latency needs --latency SYMBOL or --latency-preset NAME".into());
        }
        if timing && !has(ProfileType::Latency) {
            return Err(
                "--latency/--latency-preset need --profile latency (e.g. --profile cpu,latency)"
                    .into(),
            );
        }
        if self.offcpu_every.is_some() && !has(ProfileType::Offcpu) {
            return Err("--offcpu-every needs --profile offcpu (e.g. --profile cpu,offcpu)".into());
        }
        let profiles = crate::go::GoProfiles {
            goroutines: has(ProfileType::Goroutines),
            allocs: has(ProfileType::Allocs),
            calls,
            latency: has(ProfileType::Latency),
            contention: has(ProfileType::Contention),
            heap: has(ProfileType::Heap),
        };
        #[cfg(feature = "bench-knobs")]
        let knobs = crate::go::BenchKnobs::from_env()?;
        #[cfg(not(feature = "bench-knobs"))]
        let knobs = crate::go::BenchKnobs::default();
        Ok((
            has(ProfileType::Cpu),
            crate::go::GoOptions {
                profiles,
                count: self.count.clone(),
                preset: self.count_preset.clone(),
                alloc_exact: self.allocs_exact,
                alloc_set_rate: self.allocs_set_rate,
                count_stacks: self.count_stacks,
                knobs,
                latency: self.latency.clone(),
                latency_preset: self.latency_preset.clone(),
            },
        ))
    }

    /// `--profile offcpu`: one context switch in how many is sampled
    /// (`--offcpu-every`, default [`profiler_common::lock::OFFCPU_DEFAULT_EVERY`]);
    /// `None` without offcpu.
    pub fn offcpu(&self) -> Option<u32> {
        self.profiles.contains(&ProfileType::Offcpu).then(|| {
            self.offcpu_every
                .unwrap_or(profiler_common::lock::OFFCPU_DEFAULT_EVERY)
        })
    }
}

/// `profiler record` flags.
#[derive(clap::Args, Debug)]
// The doc comments are the flags' help: `<type>.pb.gz` is text, not HTML.
#[allow(rustdoc::invalid_html_tags)]
pub struct RecordArgs {
    /// Process to profile (repeatable); its children are followed.
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// cgroup v2 directory to profile (absolute, or relative to the cgroup2 mount).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// Stop after this long (e.g. 30s, 2m); default: until Ctrl-C or the command exits.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,
    /// Samples per second per CPU [default: 99]; only with the cpu profile
    /// type (without it no CPU sampler runs).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10000))]
    pub frequency: Option<u64>,
    /// Output profile (gzip'd pprof).
    #[arg(short, long, default_value = "profile.pb.gz", value_name = "FILE")]
    pub output: PathBuf,
    /// Also write a flame graph SVG.
    #[arg(long, value_name = "FILE")]
    pub flamegraph: Option<PathBuf>,
    /// Hide the progress line.
    #[arg(long, short)]
    pub quiet: bool,
    /// Report rare events inside the eBPF programs (a map that filled, a
    /// stack walk that stopped at an unexpected frame, a failed attach-time
    /// check) on stderr, through aya-log. Off by default; costs nothing on
    /// the sampling path when off.
    #[arg(long)]
    pub ebpf_log: bool,
    /// Profile types and the Go probes' settings (shared with `agent`).
    #[command(flatten)]
    pub go: GoProfileArgs,
    /// Command to launch and profile.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Examples after `profiler fetch --help`.
pub const FETCH_EXAMPLES: &str = "\
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
#[derive(clap::Args, Debug)]
pub struct FetchArgs {
    /// Agent base URL, http(s)://HOST:PORT (repeatable: one per node).
    #[arg(long = "agent", value_name = "URL", required = true)]
    pub agents: Vec<String>,
    /// Pod: NAMESPACE/NAME, NAME, or a pod uid.
    #[arg(long, value_name = "POD")]
    pub pod: String,
    /// Only this container (name or id); default: all containers of the pod.
    #[arg(long, value_name = "NAME")]
    pub container: Option<String>,
    /// Profile type.
    #[arg(long = "type", default_value = "cpu", value_name = "TYPE")]
    pub profile_type: String,
    /// Range start: RFC 3339, unix seconds, now, or -DURATION (e.g. -10m).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub from: String,
    /// Range end (default: now).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub to: Option<String>,
    /// Output profile (gzip'd pprof).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// File holding the agents' bearer token.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Timeout of each agent's request.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// Use the agents that answered even if others failed (unreachable, 5xx).
    #[arg(long)]
    pub allow_partial: bool,
}

/// Reads a bearer-token file named by `flag`; a missing, unreadable or
/// (with `non_empty`) empty file is a usage error naming the flag.
fn read_token(flag: &str, path: &std::path::Path, non_empty: bool) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(t) if non_empty && t.trim().is_empty() => {
            Err(format!("{flag} {}: the file is empty", path.display()))
        }
        Ok(t) => Ok(t.trim().to_string()),
        Err(e) => Err(format!(
            "{flag} {}: {e} (check the path and permissions)",
            path.display()
        )),
    }
}

impl RecordArgs {
    /// The recording's options, or a usage error (exit 2) for a flag
    /// combination clap does not check.
    pub fn options(self) -> Result<crate::record::RecordOptions, String> {
        let (cpu, go) = self.go.options()?;
        let frequency = frequency(self.frequency, cpu)?;
        if self.flamegraph.is_some() && !cpu {
            return Err(
                "--flamegraph needs --profile cpu (the flame graph is drawn from the CPU profile)"
                    .into(),
            );
        }
        let offcpu = self.go.offcpu();
        let memory = self.go.profiles.contains(&ProfileType::Memory);
        if memory && self.pids.is_empty() && self.cgroup.is_none() && self.command.is_empty() {
            return Err(
                "--profile memory needs a target: --pid PID, --cgroup PATH or a command after --"
                    .into(),
            );
        }
        Ok(crate::record::RecordOptions {
            cpu,
            pids: self.pids,
            cgroup: self.cgroup,
            duration: self.duration,
            frequency,
            output: self.output,
            flamegraph: self.flamegraph,
            command: self.command,
            drain_interval: Duration::from_secs(1),
            progress: !self.quiet,
            ebpf_log: self.ebpf_log,
            offcpu,
            go,
            memory,
        })
    }
}

impl AgentArgs {
    /// The agent's options (the token file read), or a usage error (exit 2).
    pub fn options(self) -> Result<crate::agent::AgentOptions, String> {
        use crate::agent::{store::Retention, targets::Selection};
        let token = self
            .token_file
            .as_deref()
            .map(|p| read_token("--token-file", p, true))
            .transpose()?;
        let selector = self
            .selector
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e| format!("--selector: {e}"))?;
        let (cpu, go) = self.go.options()?;
        let frequency = frequency(self.frequency, cpu)?;
        if self.go.allocs_exact {
            return Err(
                "--allocs-exact is not offered by the agent (it probes every allocation): use --allocs-set-rate".into(),
            );
        }
        if self.go.profiles.contains(&ProfileType::Memory) && self.memory_interval.is_zero() {
            return Err(
                "--profile memory with --memory-interval 0s: the agent writes memory profiles every --memory-interval (give it a non-zero interval)".into(),
            );
        }
        let offcpu = self.go.offcpu();
        let export = self.export_options()?;
        Ok(crate::agent::AgentOptions {
            node_name: self.node_name,
            listen: self.listen,
            token,
            store: self.store,
            window: self.window,
            retention: Retention {
                max_age: self.retention_age,
                max_bytes: self.retention_size,
            },
            frequency,
            cgroup_root: self.cgroup_root,
            selection: Selection {
                namespaces: self.namespaces,
                selector,
                containers: self.containers,
                process_names: self.process_names,
            },
            kube: !self.no_kube,
            rescan: self.rescan,
            ebpf_log: self.ebpf_log,
            cpu,
            go,
            export,
            memory_interval: self.memory_interval,
            offcpu,
        })
    }

    fn export_options(&self) -> Result<crate::agent::export::ExportOptions, String> {
        if self.export_timeout.is_zero() {
            return Err("--export-timeout must be more than 0".into());
        }
        for t in &self.export {
            t.check_files().map_err(|e| e.to_string())?;
        }
        Ok(crate::agent::export::ExportOptions {
            targets: self.export.clone(),
            timeout: self.export_timeout,
            max_backoff: self.export_max_backoff,
        })
    }
}

impl FetchArgs {
    /// The fetch's options (the token file read), or a usage error (exit 2).
    pub fn options(self) -> Result<crate::fetch::FetchOptions, String> {
        let token = self
            .token_file
            .as_deref()
            .map(|p| read_token("--token-file", p, false))
            .transpose()?;
        Ok(crate::fetch::FetchOptions {
            agents: self.agents,
            pod: self.pod,
            container: self.container,
            profile_type: self.profile_type,
            from: self.from,
            to: self.to,
            output: self.output,
            token,
            timeout: self.timeout,
            max_response_bytes: crate::fetch::DEFAULT_MAX_RESPONSE_BYTES,
            allow_partial: self.allow_partial,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn profile_types_and_stack_modes_parse_as_enums() {
        let cli = Cli::try_parse_from([
            "profiler",
            "record",
            "--profile",
            "cpu,calls",
            "--count-preset",
            "go-controller",
            "--count-stacks",
            "caller",
        ])
        .unwrap();
        let Cmd::Record(r) = cli.command else {
            panic!("not record")
        };
        assert_eq!(r.go.profiles, [ProfileType::Cpu, ProfileType::Calls]);
        assert_eq!(r.go.count_stacks, CountStacks::Caller);
        let o = r.options().unwrap();
        assert!(o.cpu && o.go.profiles.calls && !o.go.profiles.allocs);
        for bad in [
            &["profiler", "record", "--profile", "bogus"][..],
            &["profiler", "record", "--count-preset", "nope"],
            &["profiler", "record", "--count-stacks", "some"],
        ] {
            let e = Cli::try_parse_from(bad).unwrap_err();
            assert_eq!(e.exit_code(), crate::error::exit::USAGE, "{bad:?}");
        }
        let cli = Cli::try_parse_from(["profiler", "record", "--count", "main.f"]).unwrap();
        let Cmd::Record(r) = cli.command else {
            panic!("not record")
        };
        assert!(r.options().unwrap_err().contains("--profile calls"));
    }

    #[test]
    fn contention_and_offcpu_parse_with_their_sampling() {
        let cli = Cli::try_parse_from([
            "profiler",
            "record",
            "--profile",
            "contention,offcpu",
            "--offcpu-every",
            "4",
        ])
        .unwrap();
        let Cmd::Record(r) = cli.command else {
            panic!("not record")
        };
        let o = r.options().unwrap();
        assert!(o.go.profiles.contention && !o.cpu);
        assert_eq!(o.offcpu, Some(4));
        let cli = Cli::try_parse_from(["profiler", "record", "--profile", "offcpu"]).unwrap();
        let Cmd::Record(r) = cli.command else {
            panic!("not record")
        };
        assert_eq!(
            r.options().unwrap().offcpu,
            Some(profiler_common::lock::OFFCPU_DEFAULT_EVERY)
        );
        let e = Cli::try_parse_from(["profiler", "record", "--offcpu-every", "0"]).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::USAGE);
        let cli = Cli::try_parse_from(["profiler", "record", "--offcpu-every", "2"]).unwrap();
        let Cmd::Record(r) = cli.command else {
            panic!("not record")
        };
        assert!(r.options().unwrap_err().contains("--profile offcpu"));
    }

    #[test]
    fn frequency_only_with_the_cpu_profile() {
        let record = |args: &[&str]| {
            let mut v = vec!["profiler", "record"];
            v.extend_from_slice(args);
            let Cmd::Record(r) = Cli::try_parse_from(v).unwrap().command else {
                panic!("not record")
            };
            r.options()
        };
        let agent = |args: &[&str]| {
            let mut v = vec!["profiler", "agent"];
            v.extend_from_slice(args);
            let Cmd::Agent(a) = Cli::try_parse_from(v).unwrap().command else {
                panic!("not agent")
            };
            a.options().map(|o| (o.cpu, o.frequency))
        };
        let o = record(&[]).unwrap();
        assert!(o.cpu);
        assert_eq!(o.frequency, DEFAULT_FREQUENCY);
        let o = record(&["--frequency", "499", "--profile", "cpu,offcpu"]).unwrap();
        assert_eq!((o.cpu, o.frequency), (true, 499));
        let o = record(&["--profile", "calls", "--count", "main.f"]).unwrap();
        assert!(!o.cpu && o.go.profiles.calls);
        let e = record(&[
            "--profile",
            "calls",
            "--count",
            "main.f",
            "--frequency",
            "99",
        ])
        .unwrap_err();
        assert!(e.starts_with("--frequency needs --profile cpu"), "{e}");
        let e = record(&["--profile", "offcpu", "--flamegraph", "f.svg"]).unwrap_err();
        assert!(e.starts_with("--flamegraph needs --profile cpu"), "{e}");
        assert!(record(&["--flamegraph", "f.svg"]).is_ok());
        assert_eq!(agent(&["--frequency", "199"]).unwrap(), (true, 199));
        assert_eq!(
            agent(&["--profile", "heap"]).unwrap(),
            (false, DEFAULT_FREQUENCY)
        );
        let e = agent(&["--profile", "offcpu", "--frequency", "49"]).unwrap_err();
        assert!(e.starts_with("--frequency needs --profile cpu"), "{e}");
    }

    #[test]
    fn heap_and_memory_profile_types() {
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).unwrap();
            let Cmd::Record(r) = cli.command else {
                panic!("not record")
            };
            r.options()
        };
        let o = parse(&[
            "profiler",
            "record",
            "--profile",
            "heap,memory",
            "--pid",
            "1",
        ])
        .unwrap();
        assert!(o.go.profiles.heap && o.memory && !o.cpu && o.go.profiles.any());
        let e = parse(&["profiler", "record", "--profile", "memory"]).unwrap_err();
        assert!(e.contains("--profile memory needs a target"), "{e}");
        let cli = Cli::try_parse_from(["profiler", "agent", "--memory-interval", "0s"]).unwrap();
        let Cmd::Agent(a) = cli.command else {
            panic!("not agent")
        };
        assert!(a.options().unwrap().memory_interval.is_zero());
    }

    #[test]
    fn the_agent_takes_the_new_signal_types_with_their_flags() {
        let agent = |args: &[&str]| {
            let mut v = vec!["profiler", "agent"];
            v.extend_from_slice(args);
            let Cmd::Agent(a) = Cli::try_parse_from(v).unwrap().command else {
                panic!("not agent")
            };
            a.options()
        };
        let o = agent(&[
            "--profile",
            "cpu,latency,contention,offcpu,heap",
            "--latency-preset",
            "go-controller",
            "--offcpu-every",
            "4",
        ])
        .unwrap();
        let p = o.go.profiles;
        assert!(o.cpu && p.latency && p.contention && p.heap && !p.calls);
        assert_eq!(o.go.latency_preset.as_deref(), Some("go-controller"));
        assert_eq!(o.offcpu, Some(4));
        let o = agent(&["--profile", "offcpu"]).unwrap();
        assert_eq!(
            o.offcpu,
            Some(profiler_common::lock::OFFCPU_DEFAULT_EVERY),
            "the default rate"
        );
        assert_eq!(agent(&[]).unwrap().offcpu, None);
        for (args, says) in [
            (&["--profile", "latency"][..], "--latency SYMBOL"),
            (&["--latency", "main.f"], "--profile latency"),
            (&["--offcpu-every", "2"], "--profile offcpu"),
            (
                &["--profile", "memory", "--memory-interval", "0s"],
                "--memory-interval",
            ),
        ] {
            let e = agent(args).unwrap_err();
            assert!(e.contains(says), "{args:?}: {e}");
        }
    }
}
