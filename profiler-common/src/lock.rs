//! Map keys, values and constants of the lock-contention uprobes and the
//! off-CPU `sched_switch` program (`profiler-ebpf/src/lock.rs`,
//! `profiler-user/src/go/contention.rs`, `profiler-user/src/offcpu.rs`).
//!
//! Contention: a uprobe in `runtime.semacquire1` on the `CALL` to
//! `runtime.gopark` (the waiter parks: time and stack, keyed by its g in
//! R14) and one in `runtime.semrelease1` on the `CALL` to
//! `runtime.readyWithTime` (the releaser makes that g runnable: the wait is
//! counted) give each wait's delay and the waiter's stack. Off-CPU: the `sched_switch` tracepoint samples one switch-out of
//! a target thread in [`OffCpuConfig::every`] and measures how long that
//! thread stays off the CPU. Every loss increments a counter.

/// Capacity of the parked-goroutine map (one entry per goroutine that
/// waited; kept and reused, since the Go runtime reuses its `g`s).
pub const CONTENTION_PARKED_ENTRIES: u32 = 65536;
/// Capacity of the contention count map (distinct waiter stacks).
pub const CONTENTION_ENTRIES: u32 = 16384;
/// Capacity of the off-CPU in-progress map (sampled threads off the CPU).
pub const OFFCPU_PENDING_ENTRIES: u32 = 65536;
/// Capacity of the off-CPU count map (distinct stacks).
pub const OFFCPU_ENTRIES: u32 = 16384;
/// Capacity of the off-CPU stack table (stack hash -> [`crate::FpStack`]).
pub const OFFCPU_STACK_ENTRIES: u32 = 16384;
/// Default sampling of `--offcpu-every`: one switch-out in this many.
pub const OFFCPU_DEFAULT_EVERY: u32 = 8;

/// Key of the parked-goroutine map: a goroutine of a process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ParkKey {
    /// Process id.
    pub tgid: u32,
    /// Padding, always zero.
    pub _pad: u32,
    /// Address of the goroutine's `runtime.g` (R14 at the probe).
    pub g: u64,
}

/// A goroutine's wait (in progress when `start_ns` is not 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Parked {
    /// `bpf_ktime_get_ns` at the park (0: not parked).
    pub start_ns: u64,
    /// The waiter's stack in `GO_FP_STACKS` (0: lost).
    pub stack_hash: u64,
}

/// Aggregated waits (contention) or off-CPU intervals of one stack.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WaitTotals {
    /// Waits (contentions) or sampled off-CPU intervals.
    pub count: u64,
    /// Their summed length, nanoseconds.
    pub nanos: u64,
}

/// Key of the off-CPU count map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OffCpuKey {
    /// Process id.
    pub tgid: u32,
    /// Padding, always zero.
    pub _pad: u32,
    /// User stack in `OFFCPU_STACKS` (0: no user stack).
    pub stack_hash: u64,
}

/// A sampled thread off the CPU (`OFFCPU_PENDING`, keyed by thread id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffCpuStart {
    /// `bpf_ktime_get_ns` at the switch-out.
    pub start_ns: u64,
    /// What the interval is counted under.
    pub key: OffCpuKey,
}

/// Configuration of the `sched_switch` program (`OFFCPU_CONFIG[0]`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffCpuConfig {
    /// Sample one switch-out of a target in this many (0: off).
    pub every: u32,
    /// Offset of `next_pid` in the `sched_switch` record (from its format).
    pub next_pid_offset: u32,
}

/// Indexes of the per-CPU `CONTENTION_COUNTERS` and `OFFCPU_COUNTERS`
/// arrays (each counter lives in the array of its kind).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockCounter {
    /// Unused (kept so the indexes stay stable): waits are the sum of the
    /// contention map's counts.
    Waits = 0,
    /// Readies of a goroutine without a park entry (parked before the
    /// probes were attached, or its entry was lost).
    ReadyUnmatched = 1,
    /// Waits lost because the parked map was full.
    ParkedFull = 2,
    /// Waits lost because the contention map was full.
    ContentionFull = 3,
    /// Waits counted without a stack (walk failed, collision, table full).
    ContentionStackLost = 4,
    /// Switch-outs of targets seen by `sched_switch`.
    OffCpuSwitches = 5,
    /// Of those, sampled.
    OffCpuSampled = 6,
    /// Sampled intervals measured (switched back in).
    OffCpuMeasured = 7,
    /// Sampled intervals lost because the pending map was full.
    OffCpuPendingFull = 8,
    /// Intervals lost because the off-CPU count map was full.
    OffCpuFull = 9,
    /// Intervals counted without a user stack (walk failed, collision,
    /// table full).
    OffCpuStackLost = 10,
}

impl LockCounter {
    /// Number of counters.
    pub const COUNT: u32 = 11;
    /// Every counter, in index order.
    pub const ALL: [LockCounter; Self::COUNT as usize] = [
        LockCounter::Waits,
        LockCounter::ReadyUnmatched,
        LockCounter::ParkedFull,
        LockCounter::ContentionFull,
        LockCounter::ContentionStackLost,
        LockCounter::OffCpuSwitches,
        LockCounter::OffCpuSampled,
        LockCounter::OffCpuMeasured,
        LockCounter::OffCpuPendingFull,
        LockCounter::OffCpuFull,
        LockCounter::OffCpuStackLost,
    ];

    /// Stable snake_case name used in summaries and profile comments.
    pub const fn name(self) -> &'static str {
        match self {
            LockCounter::Waits => "waits",
            LockCounter::ReadyUnmatched => "ready_unmatched",
            LockCounter::ParkedFull => "parked_map_full",
            LockCounter::ContentionFull => "contention_map_full",
            LockCounter::ContentionStackLost => "contention_stack_lost",
            LockCounter::OffCpuSwitches => "offcpu_switches",
            LockCounter::OffCpuSampled => "offcpu_sampled",
            LockCounter::OffCpuMeasured => "offcpu_measured",
            LockCounter::OffCpuPendingFull => "offcpu_pending_full",
            LockCounter::OffCpuFull => "offcpu_map_full",
            LockCounter::OffCpuStackLost => "offcpu_stack_lost",
        }
    }

    /// True for counters that count lost data.
    pub const fn is_loss(self) -> bool {
        matches!(
            self,
            LockCounter::ParkedFull
                | LockCounter::ContentionFull
                | LockCounter::ContentionStackLost
                | LockCounter::OffCpuPendingFull
                | LockCounter::OffCpuFull
                | LockCounter::OffCpuStackLost
        )
    }

    /// True for the off-CPU counters (the rest are contention's).
    pub const fn is_offcpu(self) -> bool {
        (self as u32) >= LockCounter::OffCpuSwitches as u32
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C) plain data, explicit padding fields.
    unsafe impl aya::Pod for super::ParkKey {}
    unsafe impl aya::Pod for super::Parked {}
    unsafe impl aya::Pod for super::WaitTotals {}
    unsafe impl aya::Pod for super::OffCpuKey {}
    unsafe impl aya::Pod for super::OffCpuStart {}
    unsafe impl aya::Pod for super::OffCpuConfig {}
}
