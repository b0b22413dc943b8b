//! Go runtime activity through uprobes (see `profiler_common::go`).
//!
//! * `go_call`: a counted function. Attached at the stack-check `JBE`
//!   (an instruction the kernel emulates: the trap costs ~0.8 µs) with
//!   [`COOKIE_CHECK_FLAGS`]: hits where `CF|ZF` is set go to `morestack`
//!   and re-run the function, so they are skipped and counts are exact.
//!   By default every hit takes the full user stack with the program's own
//!   frame-pointer walk ([`fpwalk::walk`], shared with `cpu_sample`; ~0.4 µs of program time for a
//!   5-frame Go stack, ~0.9 µs 32 frames deeper, against ~1.2 µs and
//!   ~3.2 µs for `bpf_get_stackid`, whose walk ends in a page fault at
//!   address 0 on every Go stack). With [`COOKIE_CALLER_MODE`] the exact count is kept per
//!   immediate caller (`[SP]`) and only a sample of hits takes a stack.
//!   The `COOKIE_BENCH_*` bits stop early or use `bpf_get_stackid`, for
//!   the benchmark only.
//! * `go_newproc` (`runtime.newproc`, on the creating goroutine's stack):
//!   remembers the creation stack per thread.
//! * `go_newproc_done` (in `runtime.newproc.func1` after `newproc1`
//!   returned; the cookie names the register holding the new g): moves the
//!   pending stack to the new goroutine's goid and counts a creation.
//! * `go_exit` (`runtime.goexit1`; R14 = the exiting g): counts the exit at
//!   the goroutine's creation site and forgets the goid.
//! * `go_alloc` (`runtime.profilealloc` or `runtime.mallocgc`; the cookie
//!   names the size register): counts (stack, size).
//!
//! * `go_lat_entry` (a latency-measured function, placed like `go_call`):
//!   records (time, stack) per (process, goroutine = R14, function) in
//!   `GO_LAT_INFLIGHT`.
//! * `go_lat_ret` (on every `RET` of that function, found by decoding its
//!   code; never a uretprobe, which rewrites the return address on a Go
//!   stack): pairs with the entry of the same goroutine and adds one call
//!   and its duration to `GO_LAT_HIST` under (stack, function, bucket).
//!
//! At all these probes the return address is at `[SP]` (SP delta 0), so
//! frame-pointer unwinding skips the immediate caller; it is stored in the
//! key's `caller` and inserted by userspace.
use crate::{
    diag,
    fpwalk::{self, Stored, SLOT_UPROBE},
};
use aya_ebpf::{
    bindings::{pt_regs, BPF_F_USER_STACK, BPF_NOEXIST},
    helpers::{
        bpf_get_attach_cookie, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user,
    },
    macros::{map, uprobe},
    maps::{HashMap, PerCpuArray, PerCpuHashMap, StackTrace},
    programs::{tracing::StackIdContext as _, ProbeContext},
    EbpfContext as _,
};
use aya_log_ebpf::{error, warn};
use profiler_common::go::{
    lat_bucket, reg, GoCounter, GoFpStack, GoLatKey, GoLatStart, GoProcConfig, GoStackKey, GoidKey,
    LatCounts, SiteCounts, CALLER_MODE_FIRST_STACKS, CALLER_MODE_STACK_EVERY,
    COOKIE_BENCH_NO_COUNT, COOKIE_BENCH_STACKID, COOKIE_BENCH_TRAP_ONLY, COOKIE_CALLER_MODE,
    COOKIE_CHECK_FLAGS, COOKIE_FILTER_PROCS, COOKIE_TAG_MASK, GO_ALLOC_ENTRIES, GO_CALL_ENTRIES,
    GO_CALL_SITE_ENTRIES, GO_FP_STACK_ENTRIES, GO_GOROUTINE_ENTRIES, GO_LAT_HIST_ENTRIES,
    GO_LAT_INFLIGHT_ENTRIES, GO_PENDING_ENTRIES, GO_PROC_ENTRIES, GO_SITE_ENTRIES,
    GO_STACK_ENTRIES, LAT_BUCKET_SHIFT,
};

#[map]
static GO_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(GoCounter::COUNT, 0);
#[map]
static GO_PROCS: HashMap<u32, GoProcConfig> = HashMap::with_max_entries(GO_PROC_ENTRIES, 0);
#[map]
static GO_STACKS: StackTrace = StackTrace::with_max_entries(GO_STACK_ENTRIES, 0);
#[map]
static GO_FP_STACKS: HashMap<u64, GoFpStack> = HashMap::with_max_entries(GO_FP_STACK_ENTRIES, 0);
#[map]
static GO_CALLS: PerCpuHashMap<GoStackKey, u64> =
    PerCpuHashMap::with_max_entries(GO_CALL_ENTRIES, 0);
#[map]
static GO_CALL_SITES: PerCpuHashMap<GoStackKey, u64> =
    PerCpuHashMap::with_max_entries(GO_CALL_SITE_ENTRIES, 0);
#[map]
static GO_ALLOCS: PerCpuHashMap<GoStackKey, u64> =
    PerCpuHashMap::with_max_entries(GO_ALLOC_ENTRIES, 0);
#[map]
static GO_SITES: PerCpuHashMap<GoStackKey, SiteCounts> =
    PerCpuHashMap::with_max_entries(GO_SITE_ENTRIES, 0);
#[map]
static GO_PENDING: HashMap<u64, GoStackKey> = HashMap::with_max_entries(GO_PENDING_ENTRIES, 0);
#[map]
static GO_GOROUTINES: HashMap<GoidKey, GoStackKey> =
    HashMap::with_max_entries(GO_GOROUTINE_ENTRIES, 0);

#[map]
static GO_LAT_INFLIGHT: HashMap<GoLatKey, GoLatStart> =
    HashMap::with_max_entries(GO_LAT_INFLIGHT_ENTRIES, 0);
#[map]
static GO_LAT_HIST: PerCpuHashMap<GoStackKey, LatCounts> =
    PerCpuHashMap::with_max_entries(GO_LAT_HIST_ENTRIES, 0);

#[inline(always)]
fn bump(counter: GoCounter) {
    if let Some(p) = GO_COUNTERS.get_ptr_mut(counter as u32) {
        add(p, 1);
    }
}

/// Add to this CPU's slot of a per-CPU map value, atomically: uprobe
/// programs run with interrupts on (a perf_event program may run in
/// between) and, on a preemptible kernel, may be preempted by another
/// task's probe on the same CPU.
#[inline(always)]
fn add(p: *mut u64, v: u64) {
    fpwalk::atomic_add(p, v);
}

#[inline(always)]
pub(crate) fn regs(ctx: &ProbeContext) -> &pt_regs {
    // SAFETY: a uprobe's context is the user pt_regs.
    unsafe { &*ctx.regs }
}

#[inline(always)]
pub(crate) fn cookie(ctx: &ProbeContext) -> u64 {
    // SAFETY: helper takes the program context.
    unsafe { bpf_get_attach_cookie(ctx.as_ptr()) }
}

/// The register `which` names. All candidates are loaded first (constant
/// context offsets): the verifier rejects a computed context offset.
#[inline(always)]
fn select(r: &pt_regs, which: u64) -> u64 {
    // SAFETY: fields of the context struct.
    let v = unsafe {
        [
            core::ptr::read_volatile(&r.rax),
            core::ptr::read_volatile(&r.rbx),
            core::ptr::read_volatile(&r.rcx),
            core::ptr::read_volatile(&r.rdi),
            core::ptr::read_volatile(&r.rsi),
            core::ptr::read_volatile(&r.rdx),
        ]
    };
    match which {
        reg::AX => v[0],
        reg::BX => v[1],
        reg::CX => v[2],
        reg::DI => v[3],
        reg::SI => v[4],
        _ => v[5],
    }
}

/// A shared (per-binary) probe hit by a process that is not a target:
/// true (counted) when the cookie asks for the `GO_PROCS` check and
/// `tgid` is not there.
#[inline(always)]
pub(crate) fn not_target(cookie: u64, tgid: u32) -> bool {
    if outsider(cookie, tgid) {
        bump(GoCounter::NotTarget);
        return true;
    }
    false
}

/// As [`not_target`] but not counted: for the second half of a pair
/// (a return, a ready) whose first half was already counted.
#[inline(always)]
pub(crate) fn outsider(cookie: u64, tgid: u32) -> bool {
    // SAFETY: only the presence of the entry is used.
    cookie & COOKIE_FILTER_PROCS != 0 && unsafe { GO_PROCS.get(&tgid) }.is_none()
}

/// True when the probe sits on the stack-check `JBE` and the branch to
/// `morestack` will be taken.
#[inline(always)]
fn morestack_taken(r: &pt_regs, cookie: u64) -> bool {
    cookie & COOKIE_CHECK_FLAGS != 0 && r.eflags & 0x41 != 0
}

#[inline(always)]
fn read_u64(addr: u64) -> Option<u64> {
    // SAFETY: bpf_probe_read_user checks the address.
    match unsafe { bpf_probe_read_user(addr as *const u64) } {
        Ok(v) => Some(v),
        Err(_) => {
            bump(GoCounter::ReadFailed);
            None
        }
    }
}

/// The key of the current user stack at an entry probe: the program's own
/// frame-pointer walk ([`fpwalk::walk`], from the caller's RBP: the probes
/// sit before the function pushes RBP), or with [`COOKIE_BENCH_STACKID`] the
/// kernel's `bpf_get_stackid`.
#[inline(always)]
fn stack_key(ctx: &ProbeContext, tgid: u32, tag: u64, cookie: u64) -> GoStackKey {
    let r = regs(ctx);
    let caller = read_u64(r.rsp).unwrap_or(0);
    if cookie & COOKIE_BENCH_STACKID != 0 {
        let stack_id = match ctx.get_stackid(&GO_STACKS, BPF_F_USER_STACK as u64) {
            Ok(id) => id as i32,
            Err(e) => {
                bump(GoCounter::StackLost);
                e as i32
            }
        };
        return GoStackKey {
            tgid,
            stack_id,
            stack_hash: 0,
            caller,
            tag,
        };
    }
    let (stack_id, stack_hash) = match fpwalk::walk::<SLOT_UPROBE, true>(r.rip, r.rbp) {
        Some(w) => {
            if w.unexpected() && diag::enabled() {
                warn!(
                    ctx,
                    "go probe (tag {}): user stack of tgid {} stopped at an unexpected frame pointer 0x{:x} after {} frame(s), ip 0x{:x}, reason {} (3 misaligned, 4 unreadable, 5 repeating)",
                    tag,
                    tgid,
                    w.fp,
                    w.frames,
                    r.rip,
                    w.stop
                );
            }
            (-1, w.hash)
        }
        None => {
            bump(GoCounter::StackLost);
            (-1, 0)
        }
    };
    GoStackKey {
        tgid,
        stack_id,
        stack_hash,
        caller,
        tag,
    }
}

/// Store this CPU's scratch stack under `hash` in `GO_FP_STACKS` (a new
/// count key: the first time this CPU sees the stack). False when the
/// stack cannot be stored (table full, or a different stack with the same
/// hash).
#[inline(always)]
pub(crate) fn store_fp_stack(hash: u64) -> bool {
    match fpwalk::store::<SLOT_UPROBE>(&GO_FP_STACKS, hash) {
        Stored::Yes => true,
        Stored::Collision => {
            bump(GoCounter::StackCollision);
            false
        }
        Stored::Full => {
            bump(GoCounter::StackTableFull);
            if diag::enabled() {
                error!(
                    &(),
                    "go probes: stack table GO_FP_STACKS is full ({} stacks): counting under the immediate caller only",
                    GO_FP_STACK_ENTRIES
                );
            }
            false
        }
    }
}

/// A key seen for the first time on this CPU: store its frame-pointer
/// stack; when that fails, count under the immediate caller only.
#[inline(always)]
fn first_key(key: &GoStackKey) -> GoStackKey {
    if key.stack_hash == 0 || store_fp_stack(key.stack_hash) {
        return *key;
    }
    GoStackKey {
        stack_hash: 0,
        ..*key
    }
}

#[inline(always)]
fn count(map: &PerCpuHashMap<GoStackKey, u64>, key: &GoStackKey) {
    if let Some(p) = map.get_ptr_mut(key) {
        add(p, 1);
        return;
    }
    let stored = first_key(key);
    let key = &stored;
    if key.stack_hash == 0 {
        if let Some(p) = map.get_ptr_mut(key) {
            add(p, 1);
            return;
        }
    }
    if let Err(e) = map.insert(key, &1u64, BPF_NOEXIST as u64) {
        // Full (per-CPU maps: no other CPU can insert our slot).
        match map.get_ptr_mut(key) {
            Some(p) => add(p, 1),
            None => {
                bump(GoCounter::MapFull);
                if diag::enabled() {
                    error!(
                        &(),
                        "go probes: count map full (insert error {}): an event of tgid {} (tag {}) is lost",
                        e,
                        key.tgid,
                        key.tag
                    );
                }
            }
        }
    }
}

#[uprobe]
pub fn go_call(ctx: ProbeContext) -> u32 {
    let c = cookie(&ctx);
    if c & COOKIE_BENCH_TRAP_ONLY != 0 {
        return 0;
    }
    if morestack_taken(regs(&ctx), c) {
        bump(GoCounter::MorestackSkipped);
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if not_target(c, tgid) {
        return 0;
    }
    let tag = c & COOKIE_TAG_MASK;
    if c & COOKIE_CALLER_MODE != 0 {
        count_by_caller(&ctx, tgid, tag, c);
    } else {
        let key = stack_key(&ctx, tgid, tag, c);
        if c & COOKIE_BENCH_NO_COUNT != 0 {
            return 0;
        }
        count(&GO_CALLS, &key);
    }
    bump(GoCounter::Calls);
    0
}

/// `--count-stacks caller`: an exact count per (caller, symbol) in
/// `GO_CALL_SITES`; the full stack only for the first hits per caller and
/// CPU and then one hit in `CALLER_MODE_STACK_EVERY` (into `GO_CALLS`).
#[inline(always)]
fn count_by_caller(ctx: &ProbeContext, tgid: u32, tag: u64, cookie: u64) {
    let caller = read_u64(regs(ctx).rsp).unwrap_or(0);
    let site = GoStackKey {
        tgid,
        stack_id: 0,
        stack_hash: 0,
        caller,
        tag,
    };
    let n = match GO_CALL_SITES.get_ptr_mut(&site) {
        Some(p) => {
            // The count is exact (atomic add); the value read back only
            // picks which hits take a stack. (BPF v1 has no fetch-add.)
            add(p, 1);
            // SAFETY: this CPU's slot, valid for this run.
            unsafe { core::ptr::read_volatile(p) }
        }
        None => {
            if GO_CALL_SITES
                .insert(&site, &1u64, BPF_NOEXIST as u64)
                .is_err()
            {
                match GO_CALL_SITES.get_ptr_mut(&site) {
                    Some(p) => add(p, 1),
                    None => bump(GoCounter::MapFull),
                }
                return;
            }
            1
        }
    };
    if n <= CALLER_MODE_FIRST_STACKS || n & (CALLER_MODE_STACK_EVERY - 1) == 0 {
        let key = stack_key(ctx, tgid, tag, cookie);
        count(&GO_CALLS, &key);
    }
}

#[uprobe]
pub fn go_alloc(ctx: ProbeContext) -> u32 {
    let c = cookie(&ctx);
    let r = regs(&ctx);
    if morestack_taken(r, c) {
        bump(GoCounter::MorestackSkipped);
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if not_target(c, tgid) {
        return 0;
    }
    let size = select(r, c & 0xff);
    let key = stack_key(&ctx, tgid, size, c);
    count(&GO_ALLOCS, &key);
    bump(GoCounter::Allocs);
    0
}

#[uprobe]
pub fn go_newproc(ctx: ProbeContext) -> u32 {
    let c = cookie(&ctx);
    if morestack_taken(regs(&ctx), c) {
        bump(GoCounter::MorestackSkipped);
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if not_target(c, (pid_tgid >> 32) as u32) {
        return 0;
    }
    let mut key = stack_key(&ctx, (pid_tgid >> 32) as u32, 0, c);
    // A new creation site: store its stack now (the scratch stack is gone
    // by `go_newproc_done`).
    if GO_SITES.get_ptr_mut(&key).is_none() {
        key = first_key(&key);
    }
    if GO_PENDING.insert(&pid_tgid, &key, 0).is_err() {
        bump(GoCounter::MapFull);
    }
    0
}

#[inline(always)]
fn goid_of(tgid: u32, g: u64) -> Option<u64> {
    // SAFETY: plain-data value copied out.
    let conf = unsafe { GO_PROCS.get(&tgid) }.copied()?;
    read_u64(g.wrapping_add(conf.goid_offset as u64))
}

#[uprobe]
pub fn go_newproc_done(ctx: ProbeContext) -> u32 {
    let c = cookie(&ctx);
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if not_target(c, tgid) {
        return 0;
    }
    bump(GoCounter::Created);
    // SAFETY: plain-data value copied out.
    let Some(site) = (unsafe { GO_PENDING.get(&pid_tgid) }).copied() else {
        bump(GoCounter::CreateUnmatched);
        return 0;
    };
    let _ = GO_PENDING.remove(&pid_tgid);
    let g = select(regs(&ctx), c & 0xff);
    let Some(goid) = goid_of(tgid, g) else {
        if diag::enabled() {
            error!(
                &ctx,
                "go_newproc_done: no goid for tgid {} (g 0x{:x}): the attach-time GO_PROCS entry is missing or g is unreadable",
                tgid,
                g
            );
        }
        return 0;
    };
    let gk = GoidKey {
        tgid,
        _pad: 0,
        goid,
    };
    if let Err(e) = GO_GOROUTINES.insert(&gk, &site, 0) {
        bump(GoCounter::GoroutineMapFull);
        if diag::enabled() {
            error!(
                &ctx,
                "go_newproc_done: goroutine map GO_GOROUTINES is full ({} goroutines, insert error {}): goroutine {} of tgid {} is not tracked",
                GO_GOROUTINE_ENTRIES,
                e,
                goid,
                tgid
            );
        }
        return 0;
    }
    if let Some(p) = GO_SITES.get_ptr_mut(&site) {
        // SAFETY: map value pointer valid for this run.
        add(unsafe { core::ptr::addr_of_mut!((*p).created) }, 1);
        return 0;
    }
    let fresh = SiteCounts {
        created: 1,
        exited: 0,
    };
    if GO_SITES.insert(&site, &fresh, BPF_NOEXIST as u64).is_err() {
        match GO_SITES.get_ptr_mut(&site) {
            Some(p) => add(unsafe { core::ptr::addr_of_mut!((*p).created) }, 1),
            None => {
                bump(GoCounter::MapFull);
                let _ = GO_GOROUTINES.remove(&gk);
            }
        }
    }
    0
}

#[uprobe]
pub fn go_exit(ctx: ProbeContext) -> u32 {
    let c = cookie(&ctx);
    let r = regs(&ctx);
    if morestack_taken(r, c) {
        bump(GoCounter::MorestackSkipped);
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if not_target(c, tgid) {
        return 0;
    }
    let Some(goid) = goid_of(tgid, r.r14) else {
        return 0;
    };
    let gk = GoidKey {
        tgid,
        _pad: 0,
        goid,
    };
    // SAFETY: plain-data value copied out.
    let Some(site) = (unsafe { GO_GOROUTINES.get(&gk) }).copied() else {
        bump(GoCounter::ExitUntracked);
        return 0;
    };
    let _ = GO_GOROUTINES.remove(&gk);
    bump(GoCounter::Exited);
    if let Some(p) = GO_SITES.get_ptr_mut(&site) {
        // SAFETY: map value pointer valid for this run.
        add(unsafe { core::ptr::addr_of_mut!((*p).exited) }, 1);
    }
    0
}

#[uprobe]
pub fn go_lat_entry(ctx: ProbeContext) -> u32 {
    let c = cookie(&ctx);
    let r = regs(&ctx);
    if morestack_taken(r, c) {
        bump(GoCounter::MorestackSkipped);
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if not_target(c, tgid) {
        return 0;
    }
    let tag = c & COOKIE_TAG_MASK;
    let key = stack_key(&ctx, tgid, tag, c);
    let mut stack_hash = key.stack_hash;
    // The stack must be stored now: the per-CPU scratch is gone by the RET.
    if stack_hash != 0 && GO_FP_STACKS.get_ptr(&stack_hash).is_none() && !store_fp_stack(stack_hash)
    {
        stack_hash = 0;
    }
    let lk = GoLatKey {
        tgid,
        _pad: 0,
        g: r.r14,
        tag,
    };
    let start = GoLatStart {
        // SAFETY: no preconditions.
        ts: unsafe { bpf_ktime_get_ns() },
        stack_hash,
        caller: key.caller,
    };
    if GO_LAT_INFLIGHT.get_ptr(&lk).is_some() {
        bump(GoCounter::LatencyOverwritten);
    }
    if GO_LAT_INFLIGHT.insert(&lk, &start, 0).is_err() {
        bump(GoCounter::LatencyInflightFull);
        if diag::enabled() {
            error!(
                &ctx,
                "go probes: GO_LAT_INFLIGHT full ({} calls in flight): a call of tgid {} (tag {}) is not timed",
                GO_LAT_INFLIGHT_ENTRIES,
                tgid,
                tag
            );
        }
    }
    0
}

#[uprobe]
pub fn go_lat_ret(ctx: ProbeContext) -> u32 {
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let c = cookie(&ctx);
    let r = regs(&ctx);
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // Its entry was skipped (and counted): no entry, not "unpaired".
    if outsider(c, tgid) {
        return 0;
    }
    let tag = c & COOKIE_TAG_MASK;
    let lk = GoLatKey {
        tgid,
        _pad: 0,
        g: r.r14,
        tag,
    };
    let Some(start) = GO_LAT_INFLIGHT.get_ptr(&lk) else {
        bump(GoCounter::LatencyUnpaired);
        return 0;
    };
    // SAFETY: map value pointer valid for this run.
    let start = unsafe { *start };
    let _ = GO_LAT_INFLIGHT.remove(&lk);
    let d = now.saturating_sub(start.ts);
    let key = GoStackKey {
        tgid,
        stack_id: -1,
        stack_hash: start.stack_hash,
        caller: start.caller,
        tag: tag | (lat_bucket(d) << LAT_BUCKET_SHIFT),
    };
    bump(GoCounter::LatencyCalls);
    if let Some(p) = GO_LAT_HIST.get_ptr_mut(&key) {
        // SAFETY: this CPU's slot of a map value, valid for this run.
        unsafe {
            add(&mut (*p).count, 1);
            add(&mut (*p).total_ns, d);
        }
        return 0;
    }
    let v = LatCounts {
        count: 1,
        total_ns: d,
    };
    if GO_LAT_HIST.insert(&key, &v, BPF_NOEXIST as u64).is_err() {
        match GO_LAT_HIST.get_ptr_mut(&key) {
            // SAFETY: as above.
            Some(p) => unsafe {
                add(&mut (*p).count, 1);
                add(&mut (*p).total_ns, d);
            },
            None => {
                bump(GoCounter::MapFull);
                if diag::enabled() {
                    error!(
                        &ctx,
                        "go probes: latency histogram full ({} cells): a call of tgid {} (tag {}) is lost",
                        GO_LAT_HIST_ENTRIES,
                        tgid,
                        tag
                    );
                }
            }
        }
    }
    0
}
