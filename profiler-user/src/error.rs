//! Errors of `profiler record` and the exit codes they map to.
//!
//! Each variant keeps the error it came from as its [`source`]
//! (`std::error::Error::source`); [`report`] renders the chain on one line.
//! Permission problems are recognised by the OS error number aya passes up
//! (`EPERM`, `EACCES`), not by the text of a message.
//!
//! [`source`]: std::error::Error::source

use std::{error::Error as StdError, io, path::PathBuf};

/// A boxed error kept as the source of a [`RecordError`].
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why a recording could not start or finish. Each variant's message is one
/// line naming the cause and the fix; the underlying error is its source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// A bad option value the command-line parser could not catch and no
    /// typed variant below covers; exit 2.
    #[error("{0}")]
    Usage(String),
    /// `--count-preset` names no preset; exit 2.
    #[error("--count-preset {name}: unknown preset (known: {known})", known = crate::go::PRESETS.join(", "))]
    UnknownPreset {
        /// The name given.
        name: String,
    },
    /// Not root and without CAP_BPF and CAP_PERFMON (checked before
    /// anything is loaded).
    #[error("profiler needs root or CAP_BPF and CAP_PERFMON: run it with sudo, or `setcap cap_bpf,cap_perfmon+ep $(which profiler)`")]
    NoPrivileges,
    /// The kernel refused an eBPF operation with `EPERM` or `EACCES`.
    #[error("{action} was refused (EPERM): run as root or grant CAP_BPF and CAP_PERFMON")]
    Refused {
        /// What was refused (e.g. "loading eBPF program cpu_sample").
        action: String,
        /// The kernel's answer.
        #[source]
        source: BoxError,
    },
    /// A `--pid` that does not exist.
    #[error("pid {0} not found: check the process is running (ps -p {0})")]
    PidNotFound(u32),
    /// A `--cgroup` that does not exist or is not in the cgroup v2 hierarchy.
    #[error("cgroup {}: {problem}", path.display())]
    Cgroup {
        /// The path as given.
        path: PathBuf,
        /// What is wrong (its message says what to do).
        problem: CgroupProblem,
        /// The OS error, if one caused it.
        #[source]
        source: Option<io::Error>,
    },
    /// The kernel has no BTF.
    #[error("this kernel has no BTF (/sys/kernel/btf/vmlinux missing): use a kernel built with CONFIG_DEBUG_INFO_BTF=y")]
    NoBtf,
    /// `perf_event_open` of the CPU clock failed on a CPU.
    #[error("cannot open the CPU clock perf event on cpu {cpu}; check kernel.perf_event_paranoid and CAP_PERFMON")]
    PerfEvent {
        /// The CPU.
        cpu: u32,
        /// aya's error (with the OS error below it).
        #[source]
        source: aya::programs::ProgramError,
    },
    /// Parsing or loading the eBPF object failed.
    #[error("loading the eBPF object")]
    Load(#[source] aya::EbpfError),
    /// The verifier or the kernel rejected a program.
    #[error("loading program {name}{}", verifier_tail(source))]
    Program {
        /// The program's name.
        name: String,
        /// aya's error.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// Another eBPF operation failed: a map missing or refused, an attach.
    #[error("eBPF: {what}")]
    Ebpf {
        /// What was being done.
        what: String,
        /// The error from aya or the OS, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// The command to profile could not start.
    #[error("cannot start command `{cmd}` (check the program exists and is executable)")]
    Command {
        /// The command name.
        cmd: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Writing an output failed.
    #[error("writing {}", path.display())]
    Output {
        /// Output path.
        path: PathBuf,
        /// What failed.
        #[source]
        source: BoxError,
    },
    /// A signal handler could not be installed.
    #[error("installing the {signal} handler")]
    Signal {
        /// The signal's name.
        signal: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// What is wrong with a `--cgroup` path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CgroupProblem {
    /// No cgroup v2 hierarchy is mounted.
    #[error("no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup/unified)")]
    NoV2Mount,
    /// The path is not a directory of the cgroup v2 hierarchy.
    #[error(
        "not found under the cgroup v2 mount {}: give a path like {}/kubepods.slice/...",
        mount.display(),
        mount.display()
    )]
    NotFound {
        /// Where the cgroup v2 hierarchy is mounted.
        mount: PathBuf,
    },
    /// The cgroup's id (the inode of its directory) could not be read; the
    /// OS error is the [`RecordError::Cgroup`]'s source.
    #[error("cannot read its cgroup id")]
    NoId,
}

/// The last line of a verifier log, as " (verifier: ...)".
fn verifier_tail(e: &aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError { verifier_log, .. } => {
            match verifier_log
                .to_string()
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
            {
                Some(l) => format!(" (verifier: {l})"),
                None => String::new(),
            }
        }
        _ => String::new(),
    }
}

/// The OS error number found in `e` or its sources (aya keeps the
/// syscall's `io::Error` as a source).
pub fn errno(e: &(dyn StdError + 'static)) -> Option<i32> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if let Some(n) = io.raw_os_error() {
                return Some(n);
            }
        }
        cur = err.source();
    }
    None
}

/// True if `e` (or a source of it) is `EPERM` or `EACCES`.
fn refused(e: &(dyn StdError + 'static)) -> bool {
    matches!(errno(e), Some(libc::EPERM | libc::EACCES))
}

/// `e` and its sources on one line, joined by ": " (only the first line of
/// each message, so a verifier log does not spill over).
pub fn report(e: &(dyn StdError + 'static)) -> String {
    let mut out = String::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        let first = text.lines().next().unwrap_or("").trim_end();
        if !first.is_empty() && !out.contains(first) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(first);
        }
        cur = err.source();
    }
    out
}

impl RecordError {
    /// Documented exit code of this error (see README "Exit codes").
    pub fn exit_code(&self) -> i32 {
        match self {
            RecordError::Usage(_) | RecordError::UnknownPreset { .. } => exit::USAGE,
            RecordError::NoPrivileges | RecordError::Refused { .. } => exit::PERMISSION,
            RecordError::PidNotFound(_) | RecordError::Cgroup { .. } => exit::TARGET,
            RecordError::NoBtf
            | RecordError::PerfEvent { .. }
            | RecordError::Load(_)
            | RecordError::Program { .. }
            | RecordError::Ebpf { .. } => exit::KERNEL,
            RecordError::Command { .. } => exit::COMMAND,
            RecordError::Output { .. } => exit::OUTPUT,
            RecordError::Signal { .. } => exit::FAILURE,
        }
    }

    /// An eBPF operation `what` failed with `source`; a refusal (`EPERM`,
    /// `EACCES`) becomes [`RecordError::Refused`].
    pub fn ebpf(what: impl Into<String>, source: impl Into<BoxError>) -> Self {
        let source = source.into();
        if refused(source.as_ref()) {
            RecordError::Refused {
                action: what.into(),
                source,
            }
        } else {
            RecordError::Ebpf {
                what: what.into(),
                source: Some(source),
            }
        }
    }

    /// Something the eBPF object should have is missing (no source).
    pub fn missing(what: impl Into<String>) -> Self {
        RecordError::Ebpf {
            what: what.into(),
            source: None,
        }
    }

    /// Writing `path` failed with `source`.
    pub fn output(path: impl Into<PathBuf>, source: impl Into<BoxError>) -> Self {
        RecordError::Output {
            path: path.into(),
            source: source.into(),
        }
    }

    pub(crate) fn from_load(e: aya::EbpfError) -> Self {
        if refused(&e) {
            RecordError::Refused {
                action: "loading eBPF".into(),
                source: Box::new(e),
            }
        } else {
            RecordError::Load(e)
        }
    }

    pub(crate) fn from_program(name: &str, e: aya::programs::ProgramError) -> Self {
        if refused(&e) {
            RecordError::Refused {
                action: format!("loading eBPF program {name}"),
                source: Box::new(e),
            }
        } else {
            RecordError::Program {
                name: name.into(),
                source: e,
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eperm_is_found_through_the_source_chain_not_the_text() {
        let io = io::Error::from_raw_os_error(libc::EPERM);
        let e = RecordError::ebpf("adding pid 1", io);
        assert_eq!(e.exit_code(), exit::PERMISSION, "{e}");
        // A message that merely mentions EPERM is not a refusal.
        let text = io::Error::other("EPERM Operation not permitted");
        let e = RecordError::ebpf("adding pid 1", text);
        assert_eq!(e.exit_code(), exit::KERNEL, "{e}");
        let e = RecordError::ebpf("map X", io::Error::from_raw_os_error(libc::E2BIG));
        assert_eq!(
            report(&e),
            "eBPF: map X: Argument list too long (os error 7)"
        );
    }

    #[test]
    fn cgroup_errors_name_the_path_and_the_fix() {
        let e = RecordError::Cgroup {
            path: "kubepods.slice/x".into(),
            problem: CgroupProblem::NotFound {
                mount: "/sys/fs/cgroup/unified".into(),
            },
            source: None,
        };
        assert_eq!(e.exit_code(), exit::TARGET);
        assert_eq!(
            report(&e),
            "cgroup kubepods.slice/x: not found under the cgroup v2 mount /sys/fs/cgroup/unified: \
             give a path like /sys/fs/cgroup/unified/kubepods.slice/..."
        );
        let e = RecordError::Cgroup {
            path: "/sys/fs/cgroup/unified/a".into(),
            problem: CgroupProblem::NoId,
            source: Some(io::Error::from_raw_os_error(libc::ENOENT)),
        };
        assert_eq!(
            report(&e),
            "cgroup /sys/fs/cgroup/unified/a: cannot read its cgroup id: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn usage_is_exit_2() {
        assert_eq!(RecordError::Usage("x".into()).exit_code(), exit::USAGE);
        let e = RecordError::UnknownPreset {
            name: "nope".into(),
        };
        assert_eq!(e.exit_code(), exit::USAGE);
        assert_eq!(
            e.to_string(),
            "--count-preset nope: unknown preset (known: go-controller)"
        );
    }
}
