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

/// Capacity of `GO_LAT_INFLIGHT` (calls of latency-measured functions
/// entered and not yet returned, per (process, goroutine, function)).
pub const GO_LAT_INFLIGHT_ENTRIES: u32 = 65536;
/// Capacity of `GO_LAT_HIST` ((stack, function, bucket) histogram cells).
pub const GO_LAT_HIST_ENTRIES: u32 = 32768;
/// Linear sub-buckets per power of two of the latency histogram: a bucket
/// is at most 1/16 (6.25%) of its lower bound wide.
pub const LAT_SUB_BUCKETS: u64 = 16;
/// The latency bucket (in `GoStackKey::tag` bits 32..48) sits this far up.
pub const LAT_BUCKET_SHIFT: u64 = 32;

/// Latency histogram bucket of a duration in ns: values below 16 are their
/// own bucket; above, bucket `16 * (msb - 3) + the 4 bits after the most
/// significant one` (log-spaced octaves, 16 linear steps each).
#[inline(always)]
pub fn lat_bucket(d: u64) -> u64 {
    if d < LAT_SUB_BUCKETS {
        return d;
    }
    // Position of the most significant bit by binary search (no ctlz in BPF).
    let mut msb = 0u64;
    let mut v = d;
    if v >> 32 != 0 {
        v >>= 32;
        msb += 32;
    }
    if v >> 16 != 0 {
        v >>= 16;
        msb += 16;
    }
    if v >> 8 != 0 {
        v >>= 8;
        msb += 8;
    }
    if v >> 4 != 0 {
        v >>= 4;
        msb += 4;
    }
    if v >> 2 != 0 {
        v >>= 2;
        msb += 2;
    }
    if v >> 1 != 0 {
        msb += 1;
    }
    let sub = (d >> (msb - 4)) & (LAT_SUB_BUCKETS - 1);
    LAT_SUB_BUCKETS * (msb - 3) + sub
}

/// `[lower, upper)` bounds in ns of a [`lat_bucket`] bucket.
pub fn lat_bucket_bounds(b: u64) -> (u64, u64) {
    if b < LAT_SUB_BUCKETS {
        return (b, b + 1);
    }
    let msb = b / LAT_SUB_BUCKETS + 3;
    let sub = b % LAT_SUB_BUCKETS;
    let width = 1u64 << (msb - 4);
    let lower = (LAT_SUB_BUCKETS + sub) << (msb - 4);
    (lower, lower.saturating_add(width))
}

/// Key of `GO_LAT_INFLIGHT`: one call in progress.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GoLatKey {
    /// Process id.
    pub tgid: u32,
    /// Padding, always zero.
    pub _pad: u32,
    /// The goroutine (`g` pointer, R14 on amd64).
    pub g: u64,
    /// Measured-function index.
    pub tag: u64,
}

/// Value of `GO_LAT_INFLIGHT`: when and from where the call was entered.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoLatStart {
    /// `bpf_ktime_get_ns` at entry.
    pub ts: u64,
    /// Stack hash in `GO_FP_STACKS` (0: none).
    pub stack_hash: u64,
    /// The return address at `[SP]` at entry.
    pub caller: u64,
}

/// Value of `GO_LAT_HIST` (per CPU): calls and their summed duration.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatCounts {
    /// Calls that returned.
    pub count: u64,
    /// Their durations, summed, ns.
    pub total_ns: u64,
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
    /// Latency-measured calls that returned (paired entry and `RET`).
    LatencyCalls = 14,
    /// A `RET` probe with no matching entry (entered before attaching, or
    /// the entry was lost).
    LatencyUnpaired = 15,
    /// An entry not recorded because `GO_LAT_INFLIGHT` was full.
    LatencyInflightFull = 16,
    /// An entry that replaced one of the same goroutine and function
    /// (recursion, or a call that left by panic): the older call is lost.
    LatencyOverwritten = 17,
}

impl GoCounter {
    /// Number of counters.
    pub const COUNT: u32 = 18;
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
        GoCounter::LatencyCalls,
        GoCounter::LatencyUnpaired,
        GoCounter::LatencyInflightFull,
        GoCounter::LatencyOverwritten,
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
            GoCounter::LatencyCalls => "latency_calls",
            GoCounter::LatencyUnpaired => "latency_unpaired",
            GoCounter::LatencyInflightFull => "latency_inflight_full",
            GoCounter::LatencyOverwritten => "latency_overwritten",
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
                | GoCounter::LatencyUnpaired
                | GoCounter::LatencyInflightFull
                | GoCounter::LatencyOverwritten
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
    unsafe impl aya::Pod for super::GoLatKey {}
    unsafe impl aya::Pod for super::GoLatStart {}
    unsafe impl aya::Pod for super::LatCounts {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_contain_their_values_and_are_narrow() {
        let mut last = 0;
        for (i, d) in (0..5000u64)
            .chain((1..40).map(|s| (1u64 << s) + 12345 % (1u64 << s)))
            .enumerate()
        {
            let b = lat_bucket(d);
            let (lo, hi) = lat_bucket_bounds(b);
            assert!(lo <= d && d < hi, "{d} in bucket {b} = [{lo}, {hi})");
            if d >= 16 {
                assert!((hi - lo) * 16 <= lo, "bucket {b} too wide: [{lo}, {hi})");
            }
            if i < 5000 {
                assert!(b >= last, "buckets grow with the value");
                last = b;
            }
        }
        assert_eq!(lat_bucket(15), 15);
        assert_eq!(lat_bucket(16), 16);
        assert_eq!(lat_bucket(31), 31);
        assert_eq!(lat_bucket(32), 32);
        assert_eq!(lat_bucket(34), 33);
        assert_eq!(
            lat_bucket_bounds(lat_bucket(u64::MAX)).0,
            0xf800_0000_0000_0000
        );
    }
}
