use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_F_USER_STACK, BPF_NOEXIST},
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_comm,
        bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_probe_read_kernel,
        bpf_probe_read_user, bpf_task_pt_regs,
    },
    macros::{map, perf_event, tracepoint},
    maps::{Array, HashMap, PerCpuArray, RingBuf, StackTrace},
    programs::{tracing::StackIdContext as _, PerfEventContext, TracePointContext},
};
use profiler_common::{
    AddrRange, Config, Counter, EventKind, FpStack, FramelessSlice, ProcessEvent, SampleKey,
    COUNT_MAP_ENTRIES, FRAMELESS_ENTRIES, FRAMELESS_INDEX_ENTRIES, FRAMELESS_SEARCH_STEPS,
    MAX_CGROUP_LEVELS, STACK_MAP_ENTRIES, TARGET_CGROUP_ENTRIES, TARGET_TGID_ENTRIES,
    USER_STACK_ENTRIES, USER_STACK_MODE_STACKID,
};

use aya_log_ebpf::{error, warn};

use crate::{
    diag,
    fpwalk::{self, atomic_add, Stored, SLOT_PERF},
};

const EEXIST: i64 = 17;
const EFAULT: i32 = 14;

#[map]
static CONFIG: Array<u64> = Array::with_max_entries(Config::COUNT, 0);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);
#[map]
static TARGET_TGIDS: HashMap<u32, u8> = HashMap::with_max_entries(TARGET_TGID_ENTRIES, 0);
#[map]
static TARGET_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(TARGET_CGROUP_ENTRIES, 0);
#[map]
static COUNTS0: HashMap<SampleKey, u64> = HashMap::with_max_entries(COUNT_MAP_ENTRIES, 0);
#[map]
static COUNTS1: HashMap<SampleKey, u64> = HashMap::with_max_entries(COUNT_MAP_ENTRIES, 0);
#[map]
static STACKS0: StackTrace = StackTrace::with_max_entries(STACK_MAP_ENTRIES, 0);
#[map]
static STACKS1: StackTrace = StackTrace::with_max_entries(STACK_MAP_ENTRIES, 0);
// User stacks (1 KiB each) are inserted only for a new count key, so they
// are allocated on insert (`BPF_F_NO_PREALLOC`) instead of 2 x 16 MiB up
// front; a failed allocation counts as `user_stack_missing`.
#[map]
static USER_STACKS0: HashMap<u64, FpStack> =
    HashMap::with_max_entries(USER_STACK_ENTRIES, BPF_F_NO_PREALLOC);
#[map]
static USER_STACKS1: HashMap<u64, FpStack> =
    HashMap::with_max_entries(USER_STACK_ENTRIES, BPF_F_NO_PREALLOC);
#[map]
static FRAMELESS: Array<AddrRange> = Array::with_max_entries(FRAMELESS_ENTRIES, 0);
#[map]
static FRAMELESS_INDEX: HashMap<u32, FramelessSlice> =
    HashMap::with_max_entries(FRAMELESS_INDEX_ENTRIES, 0);
/// Benchmark only (`phase-timing` feature, `cargo xtask bench overhead`
/// with `BENCH_OVERHEAD_PHASES=1`): per CPU, nanoseconds spent by sampled
/// runs in each phase of `cpu_sample` (slots 0-5), in the frameless binary
/// search (13), its steps (14), and the number of sampled runs (15).
#[cfg(feature = "phase-timing")]
#[map]
static PHASE: PerCpuArray<u64> = PerCpuArray::with_max_entries(16, 0);

/// The clock for [`phase`] (0 without the `phase-timing` feature).
#[inline(always)]
fn phase_clock() -> u64 {
    #[cfg(feature = "phase-timing")]
    // SAFETY: helper without arguments.
    return unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    #[cfg(not(feature = "phase-timing"))]
    0
}

/// Add the time since `*t` to `PHASE[slot]` (or `v` when `t` is None) and
/// restart `*t`; nothing without the `phase-timing` feature.
#[inline(always)]
fn phase(slot: u32, t: Option<&mut u64>, v: u64) {
    #[cfg(feature = "phase-timing")]
    if let Some(p) = PHASE.get_ptr_mut(slot) {
        let add = match t {
            Some(t) => {
                let now = phase_clock();
                let d = now.wrapping_sub(*t);
                *t = now;
                d
            }
            None => v,
        };
        // SAFETY: this CPU's slot, valid for this run; per-CPU and
        // benchmark only, so a plain add is enough.
        unsafe { *p += add };
    }
    #[cfg(not(feature = "phase-timing"))]
    let _ = (slot, t, v);
}

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);

/// A `CONFIG` slot (0 when unset).
#[inline(always)]
pub(crate) fn config(slot: Config) -> u64 {
    CONFIG.get(slot as u32).copied().unwrap_or(0)
}

#[inline(always)]
fn bump(counter: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(counter as u32) {
        // Per-CPU slot, but the tracepoint programs bump it too.
        atomic_add(p, 1);
    }
}

#[inline(always)]
pub(crate) fn is_target(tgid: u32) -> bool {
    if config(Config::FilterEnabled) == 0 {
        return true;
    }
    // SAFETY: the value is only tested for presence.
    if unsafe { TARGET_TGIDS.get(&tgid) }.is_some() {
        return true;
    }
    if config(Config::CgroupFilter) == 0 {
        return false;
    }
    // SAFETY: helpers without pointer arguments.
    let own = unsafe { bpf_get_current_cgroup_id() };
    if unsafe { TARGET_CGROUPS.get(&own) }.is_some() {
        return true;
    }
    let mut level = 0;
    while level < MAX_CGROUP_LEVELS {
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if id == 0 {
            break;
        }
        if unsafe { TARGET_CGROUPS.get(&id) }.is_some() {
            return true;
        }
        level += 1;
    }
    false
}

/// Is `ip` inside one of `tgid`'s frameless ranges?
#[inline(always)]
fn in_frameless_range(tgid: u32, ip: u64) -> bool {
    // SAFETY: plain-data value copied out immediately.
    let Some(slice) = (unsafe { FRAMELESS_INDEX.get(&tgid) }).copied() else {
        return false;
    };
    if slice.len == 0 {
        return false;
    }
    let mut t = phase_clock();
    let ip = ip.wrapping_sub(slice.bias);
    // Find the last range whose start is <= ip.
    let mut lo: u32 = 0;
    let mut hi: u32 = slice.len; // exclusive
    let mut step = 0;
    while step < FRAMELESS_SEARCH_STEPS && lo + 1 < hi {
        let mid = lo + (hi - lo) / 2;
        match FRAMELESS.get(slice.start.wrapping_add(mid)) {
            Some(r) if r.start <= ip => lo = mid,
            Some(_) => hi = mid,
            None => return false,
        }
        step += 1;
    }
    phase(14, None, step as u64);
    phase(13, Some(&mut t), 0);
    match FRAMELESS.get(slice.start.wrapping_add(lo)) {
        Some(r) => r.start <= ip && ip < r.end,
        None => false,
    }
}

#[perf_event]
pub fn cpu_sample(ctx: PerfEventContext) -> u32 {
    match try_cpu_sample(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

fn try_cpu_sample(ctx: &PerfEventContext) -> Result<(), ()> {
    let mut t = phase_clock();
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let pid = pid_tgid as u32;
    if pid == 0 || !is_target(tgid) {
        bump(Counter::FilteredOut);
        return Ok(());
    }
    bump(Counter::Samples);
    phase(0, Some(&mut t), 0);
    phase(15, None, 1);

    let generation = config(Config::Generation) & 1;
    let (counts, stacks, user_stacks) = if generation == 0 {
        (&COUNTS0, &STACKS0, &USER_STACKS0)
    } else {
        (&COUNTS1, &STACKS1, &USER_STACKS1)
    };

    // SAFETY: perf_event programs may read their context's registers.
    let regs = unsafe { (*ctx.ctx).regs };
    let in_user = regs.cs & 3 == 3;
    // A sample taken in user mode has no kernel stack (what
    // bpf_get_stackid would say: -EFAULT, not counted as missing).
    let kernel_stack_id = if in_user {
        -EFAULT
    } else {
        match ctx.get_stackid(stacks, 0) {
            Ok(id) => id as i32,
            Err(e) => {
                if -(e as i64) == EEXIST {
                    bump(Counter::KernelStackCollision);
                } else if e != -14 {
                    bump(Counter::KernelStackMissing);
                }
                e as i32
            }
        }
    };

    // The user-mode IP, SP and frame pointer: the interrupted registers
    // when the sample hit user code, else the task's saved user registers
    // (a sample in a syscall, a page fault or a uprobe handler; none for a
    // kernel thread).
    let user = if in_user {
        Some((regs.rip, regs.rsp, regs.rbp))
    } else {
        user_regs()
    };
    phase(1, Some(&mut t), 0);
    let mut frameless_ret = 0u64;
    let mut user_stack = 0u64;
    let mut user_stack_id = -1i32;
    let stackid_mode = config(Config::UserStackMode) == USER_STACK_MODE_STACKID;
    if stackid_mode {
        // Benchmark only: the kernel's walk, as before the programs' own.
        user_stack_id = match ctx.get_stackid(stacks, BPF_F_USER_STACK as u64) {
            Ok(id) => id as i32,
            Err(e) => {
                if -(e as i64) == EEXIST {
                    bump(Counter::UserStackCollision);
                } else {
                    bump(Counter::UserStackMissing);
                }
                e as i32
            }
        };
    }
    match user {
        Some((ip, sp, bp)) if ip != 0 => {
            if in_frameless_range(tgid, ip) {
                // SAFETY: bpf_probe_read_user checks the address.
                match unsafe { bpf_probe_read_user(sp as *const u64) } {
                    Ok(ret) => {
                        frameless_ret = ret;
                        bump(Counter::FramelessFixed);
                    }
                    Err(_) => bump(Counter::FramelessReadFailed),
                }
            }
            phase(2, Some(&mut t), 0);
            if !stackid_mode {
                match fpwalk::walk::<SLOT_PERF, false>(ip, bp) {
                    Some(w) => {
                        user_stack = w.hash;
                        if w.unexpected() && diag::enabled() {
                            warn!(
                                ctx,
                                "cpu_sample: user stack of tgid {} stopped at an unexpected frame pointer 0x{:x} after {} frame(s), ip 0x{:x}, reason {} (3 misaligned, 4 unreadable, 5 repeating)",
                                tgid,
                                w.fp,
                                w.frames,
                                ip,
                                w.stop
                            );
                        }
                    }
                    None => bump(Counter::UserStackMissing),
                }
            }
        }
        _ => {
            if !stackid_mode {
                bump(Counter::UserStackMissing);
            }
        }
    }

    phase(3, Some(&mut t), 0);
    let mut key = SampleKey {
        tgid,
        kernel_stack_id,
        user_stack,
        user_stack_id,
        _pad: 0,
        frameless_ret,
        comm: bpf_get_current_comm().unwrap_or([0u8; 16]),
    };
    phase(4, Some(&mut t), 0);
    if let Some(count) = counts.get_ptr_mut(&key) {
        atomic_add(count, 1);
        phase(5, Some(&mut t), 0);
        return Ok(());
    }
    // A new key: store its user stack first, so a key that userspace can
    // see always has its stack.
    if key.user_stack != 0 {
        match fpwalk::store::<SLOT_PERF>(user_stacks, key.user_stack) {
            Stored::Yes => {}
            Stored::Collision => {
                bump(Counter::UserStackCollision);
                key.user_stack = 0;
            }
            Stored::Full => {
                bump(Counter::UserStackMissing);
                if diag::enabled() {
                    error!(
                        ctx,
                        "cpu_sample: user-stack table USER_STACKS{} is full ({} stacks): a stack of tgid {} is counted without its frames",
                        generation,
                        USER_STACK_ENTRIES,
                        tgid
                    );
                }
                key.user_stack = 0;
            }
        }
        if key.user_stack == 0 {
            if let Some(count) = counts.get_ptr_mut(&key) {
                atomic_add(count, 1);
                return Ok(());
            }
        }
    }
    if let Err(e) = counts.insert(&key, &1u64, BPF_NOEXIST as u64) {
        // Either full, or another CPU inserted the key in between.
        if let Some(count) = counts.get_ptr_mut(&key) {
            atomic_add(count, 1);
        } else {
            bump(Counter::CountMapFull);
            if diag::enabled() {
                error!(
                    ctx,
                    "cpu_sample: count map COUNTS{} is full ({} keys, insert error {}): a sample of tgid {} is lost",
                    generation,
                    COUNT_MAP_ENTRIES,
                    e,
                    tgid
                );
            }
        }
    }
    Ok(())
}

/// The current task's saved user-mode (IP, SP, frame pointer).
#[inline(always)]
pub(crate) fn user_regs() -> Option<(u64, u64, u64)> {
    // SAFETY: helpers valid in perf_event programs; the pt_regs pointer is
    // only dereferenced through bpf_probe_read_kernel.
    unsafe {
        let task = bpf_get_current_task_btf();
        if task.is_null() {
            return None;
        }
        let regs = bpf_task_pt_regs(task) as *const aya_ebpf::bindings::pt_regs;
        if regs.is_null() {
            return None;
        }
        let ip = bpf_probe_read_kernel(core::ptr::addr_of!((*regs).rip)).ok()?;
        let sp = bpf_probe_read_kernel(core::ptr::addr_of!((*regs).rsp)).ok()?;
        let bp = bpf_probe_read_kernel(core::ptr::addr_of!((*regs).rbp)).ok()?;
        Some((ip, sp, bp))
    }
}

#[inline(always)]
fn read_pid(ctx: &TracePointContext, slot: Config) -> Option<u32> {
    let off = config(slot);
    if off == u64::MAX || off > 256 {
        return None;
    }
    // SAFETY: offset comes from the tracepoint's format file.
    unsafe { ctx.read_at::<i32>(off as usize) }
        .ok()
        .map(|v| v as u32)
}

#[inline(always)]
fn emit(ctx: &TracePointContext, kind: EventKind, tgid: u32) {
    let event = ProcessEvent {
        kind: kind as u32,
        tgid,
    };
    if let Err(e) = EVENTS.output::<ProcessEvent>(&event, 0) {
        bump(Counter::EventsLost);
        if diag::enabled() {
            error!(
                ctx,
                "sched events: ring buffer EVENTS is full (error {}): event {} of tgid {} is lost",
                e,
                kind as u32,
                tgid
            );
        }
    }
}

#[tracepoint]
pub fn sched_fork(ctx: TracePointContext) -> u32 {
    if config(Config::FilterEnabled) == 0 {
        return 0;
    }
    // The current task is the parent.
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if unsafe { TARGET_TGIDS.get(&tgid) }.is_none() {
        return 0;
    }
    let Some(child) = read_pid(&ctx, Config::ForkChildPidOffset) else {
        if diag::enabled() {
            error!(
                &ctx,
                "sched_fork: no usable child_pid offset (0x{:x}) from the tracepoint format: children of target {} are not followed",
                config(Config::ForkChildPidOffset),
                tgid
            );
        }
        return 0;
    };
    // Thread creation fires this tracepoint too; a thread's id is not a
    // tgid, so only processes (whose first thread id equals their tgid)
    // ever match. Userspace prunes ids that turn out to be threads.
    if unsafe { TARGET_TGIDS.get(&child) }.is_some() {
        return 0;
    }
    if let Err(e) = TARGET_TGIDS.insert(&child, &1u8, 0) {
        bump(Counter::TargetMapFull);
        if diag::enabled() {
            error!(
                &ctx,
                "sched_fork: target map TARGET_TGIDS is full ({} processes, insert error {}): child {} of {} is not followed",
                TARGET_TGID_ENTRIES,
                e,
                child,
                tgid
            );
        }
        return 0;
    }
    emit(&ctx, EventKind::Fork, child);
    0
}

#[tracepoint]
pub fn sched_exec(ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_target(tgid) {
        return 0;
    }
    let _ = read_pid(&ctx, Config::ExecPidOffset);
    emit(&ctx, EventKind::Exec, tgid);
    0
}

#[tracepoint]
pub fn sched_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let off = config(Config::ExitGroupDeadOffset);
    let group_dead = if off != u64::MAX && off <= 256 {
        unsafe { ctx.read_at::<u8>(off as usize) }.unwrap_or(0) != 0
    } else {
        tgid == pid_tgid as u32
    };
    if !group_dead || !is_target(tgid) {
        return 0;
    }
    emit(&ctx, EventKind::Exit, tgid);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
