//! Map keys, values and constants shared by the eBPF programs
//! (`profiler-ebpf`) and userspace (`profiler-user`).
//!
//! Everything here is `#[repr(C)]` plain data; with the `user` feature the
//! types also implement `aya::Pod` so userspace can read the maps.
#![no_std]
#![deny(missing_docs)]

pub mod go;
pub mod lock;

/// Maximum frames `bpf_get_stackid` stores per stack (the kernel's
/// `PERF_MAX_STACK_DEPTH`).
pub const MAX_STACK_DEPTH: usize = 127;

/// Capacity of each stack-trace map (one per generation; kernel stacks,
/// and user stacks only with the benchmark knob [`USER_STACK_MODE_STACKID`]).
pub const STACK_MAP_ENTRIES: u32 = 16384;
/// Capacity of each user-stack table (`USER_STACKS0/1`, stack hash ->
/// [`FpStack`], one per generation).
pub const USER_STACK_ENTRIES: u32 = 16384;
/// Frames kept per stack by the programs' own frame-pointer walk (the IP,
/// then return addresses): the kernel's default `perf_event_max_stack`.
pub const FP_MAX_FRAMES: usize = 127;
/// `CONFIG[UserStackMode]` value: user stacks by the programs' own
/// frame-pointer walk (the default).
pub const USER_STACK_MODE_WALK: u64 = 0;
/// `CONFIG[UserStackMode]` value, benchmark only: user stacks with the
/// kernel's `bpf_get_stackid(BPF_F_USER_STACK)` (the sampler before the
/// walk), to measure both in one run. Only a `profiler` built with the
/// `bench-sampler` cargo feature sets it.
pub const USER_STACK_MODE_STACKID: u64 = 1;
/// Capacity of each sample-count map (one per generation).
pub const COUNT_MAP_ENTRIES: u32 = 32768;
/// Capacity of the target-tgid map (targets plus followed children).
pub const TARGET_TGID_ENTRIES: u32 = 8192;
/// Capacity of the target-cgroup map.
pub const TARGET_CGROUP_ENTRIES: u32 = 1024;
/// Capacity of the frameless-range table shared by all target binaries.
pub const FRAMELESS_ENTRIES: u32 = 131072;
/// Capacity of the per-tgid index into the frameless-range table.
pub const FRAMELESS_INDEX_ENTRIES: u32 = 8192;
/// Number of binary-search steps over a frameless slice (2^17 > entries).
pub const FRAMELESS_SEARCH_STEPS: u32 = 17;
/// Deepest cgroup level examined when matching a target cgroup.
pub const MAX_CGROUP_LEVELS: i32 = 16;

/// A user stack taken by the programs' own frame-pointer walk, stored in a
/// table keyed by a 64-bit hash of its frames (`USER_STACKS0/1` of the CPU
/// sampler, `GO_FP_STACKS` of the Go probes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FpStack {
    /// Frames used.
    pub len: u64,
    /// The IP, then return addresses, innermost first.
    pub frames: [u64; FP_MAX_FRAMES],
}

/// Key of the in-kernel sample-count maps: one entry per distinct
/// (process, thread name, user stack, kernel stack, frameless return address).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SampleKey {
    /// Process id (tgid).
    pub tgid: u32,
    /// Id of the kernel stack in the generation's stack map, or negative errno
    /// (`-EFAULT` for a sample taken in user mode).
    pub kernel_stack_id: i32,
    /// Hash of the user stack in the generation's user-stack table
    /// ([`FpStack`]); 0: no user stack (or, with the benchmark knob
    /// [`USER_STACK_MODE_STACKID`], see `user_stack_id`).
    pub user_stack: u64,
    /// Only with the benchmark knob [`USER_STACK_MODE_STACKID`]: id of the
    /// user stack in the generation's stack map; otherwise -1.
    pub user_stack_id: i32,
    /// Padding, always zero.
    pub _pad: u32,
    /// When the sampled user IP lies in a frameless range (return address at
    /// `[SP]`), the word at `[SP]`: the caller that frame-pointer unwinding
    /// skips. Zero otherwise.
    pub frameless_ret: u64,
    /// Thread name (`comm`) of the sampled thread, NUL-padded.
    pub comm: [u8; 16],
}

/// Indexes of the per-CPU counter array ([`Counter::COUNT`] entries).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Samples taken of target processes (whether or not they were stored).
    Samples = 0,
    /// Samples lost because the count map was full.
    CountMapFull = 1,
    /// User stacks lost to a stack-map hash collision (`-EEXIST`).
    UserStackCollision = 2,
    /// User stacks lost because the stack map was full or unwinding failed.
    UserStackMissing = 3,
    /// Kernel stacks lost to a stack-map hash collision.
    KernelStackCollision = 4,
    /// Kernel stacks lost because the stack map was full or unwinding failed.
    KernelStackMissing = 5,
    /// Children not followed because the target-tgid map was full.
    TargetMapFull = 6,
    /// Frameless-leaf return addresses that could not be read.
    FramelessReadFailed = 7,
    /// Process events lost because the event ring buffer was full.
    EventsLost = 8,
    /// Samples that got the frameless-leaf fix.
    FramelessFixed = 9,
    /// Runs of the sampling program that returned at the filter (an idle
    /// CPU, or a process that is not a target). With [`Counter::Samples`]
    /// it adds up to the program's `run_cnt` (`bpf_stats`).
    FilteredOut = 10,
}

impl Counter {
    /// Number of counters.
    pub const COUNT: u32 = 11;
    /// Every counter, in index order.
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::Samples,
        Counter::CountMapFull,
        Counter::UserStackCollision,
        Counter::UserStackMissing,
        Counter::KernelStackCollision,
        Counter::KernelStackMissing,
        Counter::TargetMapFull,
        Counter::FramelessReadFailed,
        Counter::EventsLost,
        Counter::FramelessFixed,
        Counter::FilteredOut,
    ];

    /// Stable snake_case name used in reports and pprof comments.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Samples => "samples",
            Counter::CountMapFull => "count_map_full",
            Counter::UserStackCollision => "user_stack_collision",
            Counter::UserStackMissing => "user_stack_missing",
            Counter::KernelStackCollision => "kernel_stack_collision",
            Counter::KernelStackMissing => "kernel_stack_missing",
            Counter::TargetMapFull => "target_map_full",
            Counter::FramelessReadFailed => "frameless_read_failed",
            Counter::EventsLost => "events_lost",
            Counter::FramelessFixed => "frameless_fixed",
            Counter::FilteredOut => "filtered_out",
        }
    }

    /// True for counters that count lost data (as opposed to activity).
    pub const fn is_loss(self) -> bool {
        !matches!(
            self,
            Counter::Samples | Counter::FramelessFixed | Counter::FilteredOut
        )
    }
}

/// Indexes of the `CONFIG` array (u64 values written by userspace).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Config {
    /// Which generation (0 or 1) of count/stack maps the programs write to.
    Generation = 0,
    /// Non-zero: only sample tgids in `TARGET_TGIDS` or cgroups in
    /// `TARGET_CGROUPS`; zero: the whole system.
    FilterEnabled = 1,
    /// Non-zero: some cgroups are targeted (ancestor walk needed).
    CgroupFilter = 2,
    /// Offset of `parent_pid` in the `sched_process_fork` record.
    ForkParentPidOffset = 3,
    /// Offset of `child_pid` in the `sched_process_fork` record.
    ForkChildPidOffset = 4,
    /// Offset of `pid` in the `sched_process_exec` record.
    ExecPidOffset = 5,
    /// Offset of `pid` in the `sched_process_exit` record.
    ExitPidOffset = 6,
    /// Offset of `group_dead` in the `sched_process_exit` record (or u64::MAX).
    ExitGroupDeadOffset = 7,
    /// How `cpu_sample` takes user stacks: [`USER_STACK_MODE_WALK`] (the
    /// default) or, benchmark only, [`USER_STACK_MODE_STACKID`].
    UserStackMode = 8,
    /// Non-zero: the programs report rare events (a map that filled, an
    /// unwind that stopped at an unexpected frame, a failed attach-time
    /// check) through aya-log (`--ebpf-log`). Read only after such an event
    /// was detected, so the sampling path does not change when it is off.
    EbpfLog = 9,
}

impl Config {
    /// Number of config slots.
    pub const COUNT: u32 = 10;
}

/// Minimum time between two aya-log messages from one CPU (`--ebpf-log`):
/// at most 10 messages per second per CPU reach the 128 KiB ring buffer
/// aya-log-ebpf writes to; the others are counted in
/// [`LogState::Suppressed`].
pub const EBPF_LOG_INTERVAL_NS: u64 = 100_000_000;

/// Indexes of the per-CPU `LOG_STATE` array of the `--ebpf-log`
/// diagnostics ([`LogState::COUNT`] u64 entries).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogState {
    /// `bpf_ktime_get_ns` of this CPU's last message.
    LastNs = 0,
    /// Messages this CPU tried to write (a full ring buffer drops them
    /// silently: userspace compares with the records it read).
    Emitted = 1,
    /// Rare events not reported because of the rate limit
    /// ([`EBPF_LOG_INTERVAL_NS`]).
    Suppressed = 2,
}

impl LogState {
    /// Number of slots.
    pub const COUNT: u32 = 3;
}

/// Where a tgid's frameless ranges sit in the shared `FRAMELESS` table.
///
/// Ranges are stored once per binary in its ELF virtual address space;
/// `bias` (load address minus ELF address) maps a process's IP into it, so
/// every process running a binary shares one slice whatever its ASLR base.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FramelessSlice {
    /// Index of the first range.
    pub start: u32,
    /// Number of ranges (sorted by start, non-overlapping).
    pub len: u32,
    /// Subtract from a process IP to get the ELF virtual address.
    pub bias: u64,
}

/// One address range `[start, end)` of ELF virtual addresses of a binary
/// where the return address is at `[SP]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AddrRange {
    /// First address in the range.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
}

/// Kind of a [`ProcessEvent`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A target forked a new process (now followed).
    Fork = 1,
    /// A target called exec: its mappings changed.
    Exec = 2,
    /// A target's last thread is exiting.
    Exit = 3,
}

/// A process lifecycle event sent to userspace through the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessEvent {
    /// An [`EventKind`] as u32.
    pub kind: u32,
    /// The process concerned.
    pub tgid: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all types are repr(C) plain data with no padding holes that
    // could be uninitialised (explicit `_pad` fields).
    unsafe impl aya::Pod for super::SampleKey {}
    unsafe impl aya::Pod for super::FpStack {}
    unsafe impl aya::Pod for super::FramelessSlice {}
    unsafe impl aya::Pod for super::AddrRange {}
    unsafe impl aya::Pod for super::ProcessEvent {}
}
