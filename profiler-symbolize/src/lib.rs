//! Symbolization and pprof output for the profiler.
//!
//! The eBPF sampler collects raw instruction pointers per process and
//! thread. This crate turns them into a gzip'd pprof profile that
//! `go tool pprof` opens:
//!
//! 1. [`Symbolizer::snapshot_process`] records a process's executable
//!    file mappings (from `/proc/PID/maps`), opening each binary once, so
//!    that samples of a process that has since exited still resolve.
//! 2. [`Symbolizer::build_profile`] maps each user address through the
//!    snapshot to the binary's ELF virtual address, symbolizes it with
//!    blazesym (DWARF lines, inlined functions as separate pprof lines,
//!    Rust/C++ demangling; Go's pclntab for stripped Go binaries) and
//!    kernel addresses through kallsyms, with a bounded cache.
//! 3. [`write_pprof_gz`] writes the profile atomically.
//!
//! [`frameless_ranges`] computes, per binary, the address ranges where the
//! return address is at `[RSP]` (Go's frameless functions and every
//! function's prologue), for the collector's frame-pointer unwinding fix;
//! [`Symbolizer::process_frameless_ranges`] gives them in a process's
//! addresses.
//!
//! # Conventions
//!
//! - Stacks are leaf first. In a pprof sample, kernel frames come first,
//!   then user frames. The first frame of each half is the interrupted
//!   instruction; every other frame is a return address and is looked up
//!   and stored at `address - 1` (inside the call), as the Go runtime does.
//! - Location addresses are ELF virtual addresses of the binary (kernel:
//!   the running kernel's addresses), with mappings set up so that
//!   `go tool pprof` computes a zero load base: the same binary in
//!   different processes or at different load addresses (PIE, ASLR)
//!   yields the same locations, and `-disasm` lines up.
//! - A frame that cannot be symbolized keeps its address and has no line;
//!   a user address outside every snapshotted mapping gets no mapping.
//! - Go binaries without DWARF (`-ldflags=-s -w` or `-w`) are symbolized
//!   from `.gopclntab`: function, file, line, and inlined calls (Go 1.20+
//!   inline tree), matching what DWARF gives.
//! - `[vdso]` frames resolve through the vDSO's dynamic symbols.
//! - [`Symbolizer`] is `Send + Sync`; blazesym's own caches are per thread.
//! - Memory: each frame-cache entry owns its function and file name
//!   strings; size [`Limits::max_cache_entries`] accordingly.
//!
//! ```no_run
//! use profiler_symbolize::{Limits, ProfileMeta, RawSample, Symbolizer, write_pprof_gz};
//! let mut sym = Symbolizer::new(Limits::default());
//! let pid = std::process::id();
//! sym.snapshot_process(pid).unwrap();
//! let samples = vec![RawSample {
//!     tgid: pid, tid: pid, comm: "me".into(),
//!     user: vec![0x401000], kernel: vec![], count: 3,
//! }];
//! let meta = ProfileMeta {
//!     frequency_hz: 99,
//!     start: std::time::SystemTime::now(),
//!     duration: std::time::Duration::from_secs(10),
//!     comments: vec![],
//! };
//! let profile = sym.build_profile(&samples, &meta);
//! write_pprof_gz(&profile, std::path::Path::new("cpu.pb.gz")).unwrap();
//! ```
#![deny(missing_docs)]

mod elf;
mod gofuncs;
mod gopclntab;
mod pprof;
mod procmaps;
mod symbolizer;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub use gofuncs::{go_functions, GoFunction};
pub use pprof::{
    build_profile, build_profile_from_resolved, canonical_text, write_pprof_gz, FrameLine,
    MappingDesc, ProfileSample, ProfileShape, ResolvedFrame, ResolvedSample,
};
pub use symbolizer::{ProcessMapping, Symbolizer, KERNEL_MAPPING};

/// Go runtime functions at which a thread's stack ends, as Go's own
/// unwinder ends there: past them the frame-pointer chain leads into
/// stacks the thread is no longer running.
///
/// * `runtime.mcall` switches from a goroutine to the thread's scheduler
///   stack (g0) to run `park_m`, `goexit0`, `exitsyscall0`, `gopreempt_m`
///   and the like, and leaves the goroutine's frame pointer in RBP (on
///   purpose, for unwinders). The goroutine is dropped from the thread,
///   which goes on to `schedule` and may run the scheduler or sleep idle
///   for a long time; the chain still leads into the dropped goroutine's
///   stack.
/// * `runtime.mstart` is the root of every thread but the first; its RBP
///   is what the thread that called `clone` had.
///
/// Every profile built from frame-pointer walks ([`Symbolizer::build_profile`]
/// and the off-CPU profile of the `profiler` binary) ends a stack at the
/// first of these (kept as its root), so the scheduler's work after a
/// goroutine parked is not credited to that goroutine's functions, as in
/// Go's own `runtime/pprof` profiles.
pub const GO_THREAD_ROOTS: [&str; 2] = ["runtime.mcall", "runtime.mstart"];

/// True when `function` is one of [`GO_THREAD_ROOTS`].
pub fn is_go_thread_root(function: &str) -> bool {
    GO_THREAD_ROOTS.contains(&function)
}

/// Where a stack ends: the index of its first frame (leaf first) whose
/// outermost function (`None` for a frame without one, or one that is not
/// Go code) is one of [`GO_THREAD_ROOTS`]. That frame stays as the root.
pub fn go_thread_root<'a>(outermost: impl IntoIterator<Item = Option<&'a str>>) -> Option<usize> {
    outermost
        .into_iter()
        .position(|f| f.is_some_and(is_go_thread_root))
}

/// One aggregated stack as the sampler collected it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawSample {
    /// Process id (thread group id); selects the mapping snapshot.
    pub tgid: u32,
    /// Thread id (kept for callers; not written to the profile).
    pub tid: u32,
    /// Thread name (label `thread`).
    pub comm: String,
    /// Absolute user-space instruction pointers, leaf first. Zeros are
    /// skipped.
    pub user: Vec<u64>,
    /// Kernel instruction pointers, leaf first. Zeros are skipped.
    pub kernel: Vec<u64>,
    /// How many times this stack was sampled.
    pub count: u64,
}

/// Profile-wide facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileMeta {
    /// Sampling frequency; the pprof period is `1e9 / frequency_hz` ns
    /// (0 if the frequency is 0).
    pub frequency_hz: u64,
    /// When the recording started (`time_nanos`).
    pub start: SystemTime,
    /// How long it ran (`duration_nanos`).
    pub duration: Duration,
    /// Free-form comments stored in the profile.
    pub comments: Vec<String>,
}

/// Bounds on everything a [`Symbolizer`] keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Process snapshots held at once.
    pub max_processes: usize,
    /// Executable mappings kept per process snapshot.
    pub max_mappings_per_process: usize,
    /// Distinct binaries known.
    pub max_binaries: usize,
    /// Binaries kept open (so they stay readable after deletion).
    pub max_open_files: usize,
    /// Symbolized frames cached across profiles.
    pub max_cache_entries: usize,
    /// Largest ELF file read, in bytes.
    pub max_elf_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_processes: 8192,
            max_mappings_per_process: 4096,
            max_binaries: 4096,
            max_open_files: 512,
            max_cache_entries: 1_000_000,
            max_elf_bytes: 4 << 30,
        }
    }
}

/// Counters and sizes of a [`Symbolizer`] (all counters are cumulative).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SymbolizeStats {
    /// Process snapshots held now.
    pub processes: usize,
    /// Binaries known now.
    pub binaries: usize,
    /// Binaries held open now.
    pub open_files: usize,
    /// Frames in the cache now.
    pub cache_entries: usize,
    /// Successful snapshots taken.
    pub snapshots: u64,
    /// Snapshots that failed (process gone, no permission).
    pub snapshot_errors: u64,
    /// Snapshots that found no mappings and kept the earlier snapshot.
    pub empty_snapshots: u64,
    /// Maps lines that did not parse.
    pub maps_lines_skipped: u64,
    /// Frame lookups served from the cache.
    pub cache_hits: u64,
    /// Frame lookups that had to symbolize.
    pub cache_misses: u64,
    /// Symbolized frames not cached because the cache was full.
    pub cache_overflow: u64,
    /// Snapshots refused because `max_processes` was reached.
    pub process_overflow: u64,
    /// Mappings dropped because `max_binaries` was reached.
    pub binary_overflow: u64,
    /// Binaries not kept open because `max_open_files` was reached.
    pub open_file_overflow: u64,
    /// Binaries whose opened file had another device/inode than maps
    /// showed (overlay filesystems; a replaced binary).
    pub identity_mismatches: u64,
    /// Binaries whose ELF headers could not be read.
    pub elf_errors: u64,
    /// User frames outside every snapshotted mapping (or of a process
    /// without snapshot); they keep their absolute address.
    pub unmapped_frames: u64,
    /// Distinct frames that got no symbol at all.
    pub unknown_frames: u64,
    /// Batches blazesym failed on as a whole (unreadable file, bad DWARF).
    pub symbolize_errors: u64,
    /// Frames resolved from the ELF symbol table after DWARF failed.
    pub symtab_fallbacks: u64,
    /// Frames resolved from Go's pclntab (stripped Go binaries).
    pub go_pclntab_fallbacks: u64,
    /// Distinct kernel frames symbolized.
    pub kernel_frames: u64,
    /// Binaries whose frameless ranges could not be computed.
    pub frameless_errors: u64,
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SymbolizeError {
    /// `/proc/PID/maps` could not be read (process gone, no permission).
    #[error("cannot read /proc/{pid}/maps: {source}")]
    Proc {
        /// The process id.
        pid: u32,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file is not an ELF file this crate understands.
    #[error("{}: {reason}", path.display())]
    Elf {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A bound of [`Limits`] was reached.
    #[error("limit of {limit} {what} reached")]
    LimitReached {
        /// What is bounded.
        what: &'static str,
        /// The bound.
        limit: usize,
    },
}

/// True for an ELF file with a Go pcln table (`.gopclntab`, or
/// `.data.rel.ro.gopclntab` in PIE builds). Reads only the headers and the
/// section table.
pub fn is_go_binary(path: &Path) -> bool {
    elf::elf_info_from_path(path).is_ok_and(|i| i.is_go)
}

/// ELF virtual-address ranges of an x86-64 binary where the return address
/// is at `[RSP]` (SP delta 0), sorted and merged.
///
/// For Go binaries (1.18+, also with `-ldflags=-s -w`) these come from
/// `.gopclntab`'s pcsp tables: whole frameless functions plus each framed
/// function's prologue and epilogue (before `PUSH RBP` / after `POP RBP`).
/// For every binary, `.eh_frame` rows whose CFA is `RSP+8` are added (C,
/// Rust, cgo code). At such PCs frame-pointer unwinding skips the caller;
/// reading `[RSP]` recovers it. Translate to process addresses with
/// [`ProcessMapping::vaddr_to_abs`]. Fails on unreadable or non-x86-64
/// ELF; an unparseable `.eh_frame` contributes nothing.
pub fn frameless_ranges(elf: &Path) -> Result<Vec<Range<u64>>, SymbolizeError> {
    elf::frameless_ranges(elf, Limits::default().max_elf_bytes)
}
