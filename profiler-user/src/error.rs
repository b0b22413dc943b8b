//! Errors of `profiler record` and the exit codes they map to.

/// Why a recording could not start or finish. Each variant's message is one
/// line naming the cause and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Missing privileges.
    #[error("{0}")]
    Permission(String),
    /// A `--pid` that does not exist.
    #[error("pid {0} not found: check the process is running (ps -p {0})")]
    PidNotFound(u32),
    /// A `--cgroup` that does not exist or is not in the cgroup v2 hierarchy.
    #[error("cgroup {path}: {why}")]
    Cgroup {
        /// The path as given.
        path: String,
        /// What is wrong and what to do.
        why: String,
    },
    /// The kernel lacks something we need.
    #[error("{0}")]
    Kernel(String),
    /// perf_event_open failed.
    #[error("cannot open the CPU clock perf event ({0}); check kernel.perf_event_paranoid and CAP_PERFMON")]
    PerfEvent(String),
    /// Loading or talking to the eBPF object failed.
    #[error("eBPF: {0}")]
    Ebpf(String),
    /// The command to profile could not start.
    #[error("cannot start command `{cmd}`: {why}")]
    Command {
        /// The command name.
        cmd: String,
        /// The OS error.
        why: String,
    },
    /// Writing the output failed.
    #[error("writing {path}: {why}")]
    Output {
        /// Output path.
        path: String,
        /// The OS error.
        why: String,
    },
}

impl RecordError {
    /// Documented exit code of this error (see README "Exit codes").
    pub fn exit_code(&self) -> i32 {
        match self {
            RecordError::Permission(_) => exit::PERMISSION,
            RecordError::PidNotFound(_) | RecordError::Cgroup { .. } => exit::TARGET,
            RecordError::Kernel(_) | RecordError::PerfEvent(_) | RecordError::Ebpf(_) => {
                exit::KERNEL
            }
            RecordError::Command { .. } => exit::COMMAND,
            RecordError::Output { .. } => exit::OUTPUT,
        }
    }

    pub(crate) fn from_load(e: aya::EbpfError) -> Self {
        let text = e.to_string();
        if text.contains("EPERM") || text.contains("Operation not permitted") {
            RecordError::Permission(
                "loading eBPF was refused (EPERM): run as root or grant CAP_BPF and CAP_PERFMON"
                    .into(),
            )
        } else {
            RecordError::Ebpf(format!("loading the eBPF object: {text}"))
        }
    }

    pub(crate) fn from_program(name: &str, e: aya::programs::ProgramError) -> Self {
        let text = format!("{e:#}");
        if text.contains("EPERM") || text.contains("Operation not permitted") {
            RecordError::Permission(format!(
                "loading eBPF program {name} was refused: run as root or grant CAP_BPF and CAP_PERFMON"
            ))
        } else {
            let detail = match &e {
                aya::programs::ProgramError::LoadError { verifier_log, .. } => {
                    format!(
                        " (verifier: {})",
                        verifier_log.to_string().lines().last().unwrap_or("")
                    )
                }
                _ => String::new(),
            };
            RecordError::Ebpf(format!("loading program {name}: {text}{detail}"))
        }
    }
}

/// Exit codes of the `profiler` binary.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// An unexpected runtime failure.
    pub const FAILURE: i32 = 1;
    /// Bad command line (clap's usage errors use this too).
    pub const USAGE: i32 = 2;
    /// Not root / missing CAP_BPF or CAP_PERFMON.
    pub const PERMISSION: i32 = 3;
    /// A PID or cgroup that does not exist.
    pub const TARGET: i32 = 4;
    /// The kernel lacks BTF, perf events or eBPF support.
    pub const KERNEL: i32 = 5;
    /// The command to profile could not be started.
    pub const COMMAND: i32 = 6;
    /// The output could not be written.
    pub const OUTPUT: i32 = 7;
}
