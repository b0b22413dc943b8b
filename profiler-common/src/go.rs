//! Map keys, values and constants of the Go runtime-activity uprobes
//! (`profiler-ebpf/src/go.rs`, `profiler-user/src/go/`).
//!
//! One uprobe program per event kind (counted call, goroutine creation,
//! goroutine exit, allocation); everything is aggregated in bounded kernel
//! hash maps keyed by [`GoStackKey`] and read by userspace while the probes
//! are attached. Every loss increments a [`GoCounter`].

/// Capacity of the Go stack-trace map (shared by every Go event kind).
pub const GO_STACK_ENTRIES: u32 = 16384;
/// Capacity of the frame-pointer stack table (`GO_FP_STACKS`, stack hash
/// -> [`GoFpStack`]), shared by every Go event kind.
pub const GO_FP_STACK_ENTRIES: u32 = 16384;
/// Frames kept per stack by the in-program frame-pointer walk (the IP and
/// the return addresses from RBP up; the caller at `[SP]` is in the key).
/// The kernel's default `perf_event_max_stack`.
pub const GO_FP_MAX_FRAMES: usize = crate::FP_MAX_FRAMES;
/// Capacity of the counted-call map.
pub const GO_CALL_ENTRIES: u32 = 16384;
/// Capacity of the per-caller exact count map of `--count-stacks caller`.
pub const GO_CALL_SITE_ENTRIES: u32 = 16384;
/// Capacity of the allocation map.
pub const GO_ALLOC_ENTRIES: u32 = 16384;
/// Capacity of the goroutine-creation-site map.
pub const GO_SITE_ENTRIES: u32 = 16384;
/// Capacity of the live-goroutine map (goid -> creation site).
pub const GO_GOROUTINE_ENTRIES: u32 = 262144;
/// Capacity of the per-thread pending-creation map.
pub const GO_PENDING_ENTRIES: u32 = 16384;
/// Capacity of the per-process configuration map.
pub const GO_PROC_ENTRIES: u32 = 1024;

/// Cookie bit of counted-call and allocation probes: the probe sits on the
/// stack-check `JBE`; skip the hit when the branch to `morestack` will be
/// taken (`CF` or `ZF` set), because the function runs again afterwards.
pub const COOKIE_CHECK_FLAGS: u64 = 1 << 63;

/// Cookie bit of counted-call probes: count by caller (the return address
/// at `[SP]`) exactly in `GO_CALL_SITES`, and take the full stack only for
/// the first [`CALLER_MODE_FIRST_STACKS`] hits per caller and CPU, then one
/// hit in [`CALLER_MODE_STACK_EVERY`] (counted in `GO_CALLS` as sampled
/// stacks). Userspace spreads each caller's exact count over its sampled
/// stacks.
pub const COOKIE_CALLER_MODE: u64 = 1 << 62;
/// Cookie bit, benchmark only: the counted-call program returns at once
/// (what the uprobe trap alone costs).
pub const COOKIE_BENCH_TRAP_ONLY: u64 = 1 << 61;
/// Cookie bit, benchmark only: the counted-call program takes the stack id
/// and the caller but updates no map (trap + unwinding).
pub const COOKIE_BENCH_NO_COUNT: u64 = 1 << 60;
/// Cookie bit, benchmark only: take the stack with the kernel's
/// `bpf_get_stackid(BPF_F_USER_STACK)` (into `GO_STACKS`) instead of the
/// program's own frame-pointer walk, to measure both in one run.
pub const COOKIE_BENCH_STACKID: u64 = 1 << 59;
/// Cookie bit of every probe the agent attaches once per binary (for all
/// processes running it): the program first checks that the calling
/// process is in `GO_PROCS` (a selected target) and returns at once
/// otherwise, counting [`GoCounter::NotTarget`].
pub const COOKIE_FILTER_PROCS: u64 = 1 << 58;
/// Mask of a cookie's tag (counted-symbol index or register selector).
pub const COOKIE_TAG_MASK: u64 = 0xffff_ffff;
/// `--count-stacks caller`: hits per caller and CPU that always take a stack.
pub const CALLER_MODE_FIRST_STACKS: u64 = 16;
/// `--count-stacks caller`: after the first hits, one hit in this many
/// (a power of two) takes a stack.
pub const CALLER_MODE_STACK_EVERY: u64 = 256;

/// Register selectors carried in the low bits of a cookie (which register
/// holds the new g, or an allocation's size).
pub mod reg {
    /// RAX.
    pub const AX: u64 = 0;
    /// RBX.
    pub const BX: u64 = 1;
    /// RCX.
    pub const CX: u64 = 2;
    /// RDI.
    pub const DI: u64 = 3;
    /// RSI.
    pub const SI: u64 = 4;
    /// RDX.
    pub const DX: u64 = 5;
}

/// Per-process facts the probes need (`GO_PROCS`, keyed by tgid).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoProcConfig {
    /// Offset of `runtime.g.goid`.
    pub goid_offset: u32,
    /// Padding, always zero.
    pub _pad: u32,
}

/// Key of the counted-call, allocation and creation-site maps: a stack
/// (the hash of a stack in `GO_FP_STACKS`, or with the benchmark stage
/// [`COOKIE_BENCH_STACKID`] a stack id in `GO_STACKS`) plus the caller
/// frame-pointer unwinding skips at an entry probe (the return address at
/// `[SP]`), plus a tag (counted-symbol index for calls, object size for
/// allocations, 0 for sites).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GoStackKey {
    /// Process id.
    pub tgid: u32,
    /// User stack id in `GO_STACKS`, or a negative errno (no stack, or the
    /// stack is in `GO_FP_STACKS` when `stack_hash` is non-zero).
    pub stack_id: i32,
    /// Key of the stack in `GO_FP_STACKS` (0: none).
    pub stack_hash: u64,
    /// The word at `[SP]` at the probe: the immediate caller.
    pub caller: u64,
    /// Kind-specific tag (see the type's doc).
    pub tag: u64,
}

/// A user stack taken by the programs' own frame-pointer walk
/// (`GO_FP_STACKS`, keyed by a 64-bit hash of the frames): the same type
/// as the CPU sampler's user stacks.
pub type GoFpStack = crate::FpStack;

/// Key of the live-goroutine map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GoidKey {
    /// Process id.
    pub tgid: u32,
    /// Padding, always zero.
    pub _pad: u32,
    /// `runtime.g.goid`.
    pub goid: u64,
}

/// Per-creation-site counts.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SiteCounts {
    /// Goroutines created at the site since attaching.
    pub created: u64,
    /// Of those, how many exited.
    pub exited: u64,
}

/// Indexes of the per-CPU `GO_COUNTERS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoCounter {
    /// Counted-call hits recorded.
    Calls = 0,
    /// Entry-probe hits skipped because `morestack` re-runs the function.
    MorestackSkipped = 1,
    /// Events lost because a count map was full.
    MapFull = 2,
    /// Stacks lost (collision or unwinding failure); the event still counts
    /// with the immediate caller only.
    StackLost = 3,
    /// Goroutine creations seen.
    Created = 4,
    /// Goroutine exits of goroutines created while attached.
    Exited = 5,
    /// Exits of goroutines created before attaching (not tracked).
    ExitUntracked = 6,
    /// Creations whose `newproc` stack was missing (site unknown).
    CreateUnmatched = 7,
    /// Creations not tracked because the live-goroutine map was full.
    GoroutineMapFull = 8,
    /// Allocation events recorded.
    Allocs = 9,
    /// Reads of target memory (goid, `[SP]`) that failed.
    ReadFailed = 10,
    /// Two different stacks with the same hash: the later one counts with
    /// the immediate caller only.
    StackCollision = 11,
    /// Stacks not stored because `GO_FP_STACKS` was full: the event counts
    /// with the immediate caller only.
    StackTableFull = 12,
    /// Hits of a shared (per-binary) probe by a process that is not a
    /// target (not in `GO_PROCS`): returned at once.
    NotTarget = 13,
}

impl GoCounter {
    /// Number of counters.
    pub const COUNT: u32 = 14;
    /// Every counter, in index order.
    pub const ALL: [GoCounter; Self::COUNT as usize] = [
        GoCounter::Calls,
        GoCounter::MorestackSkipped,
        GoCounter::MapFull,
        GoCounter::StackLost,
        GoCounter::Created,
        GoCounter::Exited,
        GoCounter::ExitUntracked,
        GoCounter::CreateUnmatched,
        GoCounter::GoroutineMapFull,
        GoCounter::Allocs,
        GoCounter::ReadFailed,
        GoCounter::StackCollision,
        GoCounter::StackTableFull,
        GoCounter::NotTarget,
    ];

    /// Stable snake_case name used in summaries and profile comments.
    pub const fn name(self) -> &'static str {
        match self {
            GoCounter::Calls => "calls",
            GoCounter::MorestackSkipped => "morestack_skipped",
            GoCounter::MapFull => "map_full",
            GoCounter::StackLost => "stack_lost",
            GoCounter::Created => "goroutines_created",
            GoCounter::Exited => "goroutines_exited",
            GoCounter::ExitUntracked => "exit_untracked",
            GoCounter::CreateUnmatched => "create_unmatched",
            GoCounter::GoroutineMapFull => "goroutine_map_full",
            GoCounter::Allocs => "allocs",
            GoCounter::ReadFailed => "read_failed",
            GoCounter::StackCollision => "stack_collision",
            GoCounter::StackTableFull => "stack_table_full",
            GoCounter::NotTarget => "not_target",
        }
    }

    /// True for counters that count lost data.
    pub const fn is_loss(self) -> bool {
        matches!(
            self,
            GoCounter::MapFull
                | GoCounter::StackLost
                | GoCounter::CreateUnmatched
                | GoCounter::GoroutineMapFull
                | GoCounter::ReadFailed
                | GoCounter::StackCollision
                | GoCounter::StackTableFull
        )
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C) plain data, explicit padding fields.
    unsafe impl aya::Pod for super::GoProcConfig {}
    unsafe impl aya::Pod for super::GoStackKey {}
    unsafe impl aya::Pod for super::GoidKey {}
    unsafe impl aya::Pod for super::SiteCounts {}
}
