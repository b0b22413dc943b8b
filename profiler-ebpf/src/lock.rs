//! Lock contention (Go) and off-CPU time (any thread); see
//! `profiler_common::lock`.
//!
//! * `go_park` (uprobe on the `CALL runtime.gopark` inside
//!   `runtime.semacquire1`; a `CALL` is emulated by the kernel, no
//!   single-step): the goroutine (R14) is about to park on a semaphore
//!   (`sync.Mutex`, `sync.RWMutex`, `sync.WaitGroup` slow paths). The park
//!   records the time and the waiter's stack (the shared frame-pointer walk
//!   from semacquire1's own frame, so no caller is skipped) in the g's
//!   entry, which is kept and reused (updated in place; no insert or delete
//!   per wait once a g has waited).
//! * `go_park_ready` (uprobe on the `CALL runtime.readyWithTime` in
//!   `runtime.semrelease1`; AX = the waiter's sudog, whose first field is
//!   its g): the releaser hands the semaphore over and makes the waiter
//!   runnable. The wait ends here, as in Go's block profile (how long the
//!   waiter then waits for a CPU is scheduling latency, not contention:
//!   ending at the waiter's own wake-up instead gave 2.2x Go's delay with
//!   busy `sync.RWMutex` readers on 2 CPUs), and is counted at once under
//!   the waiter's stack taken at park time, so the waiter itself takes no
//!   second trap. A waiter that loses the race after the ready parks again
//!   and is counted again (Go counts one event from the first park to the
//!   last ready; the delays differ by the time the waiter ran in between).
//! * `offcpu_switch` (`sched:sched_switch`): a target thread switching out
//!   is sampled with probability 1/`every` (its user stack walked, the time
//!   noted); when a sampled thread switches back in, the interval is added
//!   to its stack. The cost of a switch that is not sampled is a filter
//!   check and one hash lookup for the incoming thread.
use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_probe_read_user,
    },
    macros::{map, tracepoint, uprobe},
    maps::{Array, HashMap, PerCpuArray},
    programs::{ProbeContext, TracePointContext},
};
use profiler_common::{
    go::GoStackKey,
    lock::{
        LockCounter, OffCpuConfig, OffCpuKey, OffCpuStart, ParkKey, Parked, WaitTotals,
        CONTENTION_ENTRIES, CONTENTION_PARKED_ENTRIES, OFFCPU_ENTRIES, OFFCPU_PENDING_ENTRIES,
        OFFCPU_STACK_ENTRIES,
    },
    FpStack,
};

use crate::{
    fpwalk::{self, atomic_add, Stored, SLOT_SCHED, SLOT_UPROBE},
    go, programs,
};

#[map]
static CONTENTION_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(LockCounter::COUNT, 0);
#[map]
static OFFCPU_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(LockCounter::COUNT, 0);
#[map]
static CONTENTION_PARKED: HashMap<ParkKey, Parked> =
    HashMap::with_max_entries(CONTENTION_PARKED_ENTRIES, 0);
#[map]
static CONTENTION: HashMap<GoStackKey, WaitTotals> =
    HashMap::with_max_entries(CONTENTION_ENTRIES, 0);
#[map]
static OFFCPU_CONFIG: Array<OffCpuConfig> = Array::with_max_entries(1, 0);
#[map]
static OFFCPU_PENDING: HashMap<u32, OffCpuStart> =
    HashMap::with_max_entries(OFFCPU_PENDING_ENTRIES, 0);
#[map]
static OFFCPU: HashMap<OffCpuKey, WaitTotals> = HashMap::with_max_entries(OFFCPU_ENTRIES, 0);
#[map]
static OFFCPU_STACKS: HashMap<u64, FpStack> =
    HashMap::with_max_entries(OFFCPU_STACK_ENTRIES, BPF_F_NO_PREALLOC);

#[inline(always)]
fn bump(counter: LockCounter) {
    // Two arrays so the contention and off-CPU readers own one each.
    let map = if counter.is_offcpu() {
        &OFFCPU_COUNTERS
    } else {
        &CONTENTION_COUNTERS
    };
    if let Some(p) = map.get_ptr_mut(counter as u32) {
        atomic_add(p, 1);
    }
}

/// Add one interval of `nanos` to `key` in `map` (atomically; a new key is
/// inserted, and a lost insert race is retried as an add). False when the
/// map is full.
#[inline(always)]
fn add_wait<K>(map: &HashMap<K, WaitTotals>, key: &K, nanos: u64) -> bool {
    if let Some(p) = map.get_ptr_mut(key) {
        // SAFETY: map value pointer valid for this run.
        unsafe {
            atomic_add(core::ptr::addr_of_mut!((*p).count), 1);
            atomic_add(core::ptr::addr_of_mut!((*p).nanos), nanos);
        }
        return true;
    }
    let v = WaitTotals { count: 1, nanos };
    if map.insert(key, &v, BPF_NOEXIST as u64).is_ok() {
        return true;
    }
    match map.get_ptr_mut(key) {
        Some(p) => {
            // SAFETY: as above.
            unsafe {
                atomic_add(core::ptr::addr_of_mut!((*p).count), 1);
                atomic_add(core::ptr::addr_of_mut!((*p).nanos), nanos);
            }
            true
        }
        None => false,
    }
}

#[inline(always)]
fn contention_key(tgid: u32, stack_hash: u64) -> GoStackKey {
    GoStackKey {
        tgid,
        stack_id: -1,
        stack_hash,
        caller: 0,
        tag: 0,
    }
}

#[uprobe]
pub fn go_park(ctx: ProbeContext) -> u32 {
    let r = go::regs(&ctx);
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // The agent's shared probe: a process outside the targets is counted
    // (GoCounter::NotTarget) and leaves no entry.
    if go::not_target(go::cookie(&ctx), tgid) {
        return 0;
    }
    let key = ParkKey {
        tgid,
        _pad: 0,
        g: r.r14,
    };
    let start_ns = unsafe { bpf_ktime_get_ns() };
    let mut stack_hash = match fpwalk::walk::<SLOT_UPROBE, true>(r.rip, r.rbp) {
        Some(w) => w.hash,
        None => 0,
    };
    // Store the stack unless a finished wait already stored it.
    // SAFETY: only tested for presence.
    if stack_hash != 0
        && unsafe { CONTENTION.get(&contention_key(tgid, stack_hash)) }.is_none()
        && !go::store_fp_stack(stack_hash)
    {
        stack_hash = 0;
    }
    // Entries stay in the map (a g is reused by the Go runtime) and are
    // updated in place: no insert or delete per wait in the steady state.
    if let Some(p) = CONTENTION_PARKED.get_ptr_mut(&key) {
        // SAFETY: map value pointer valid for this run; only this
        // goroutine parks under its key.
        unsafe {
            (*p).stack_hash = stack_hash;
            (*p).start_ns = start_ns;
        }
        return 0;
    }
    let parked = Parked {
        start_ns,
        stack_hash,
    };
    if CONTENTION_PARKED.insert(&key, &parked, 0).is_err() {
        bump(LockCounter::ParkedFull);
    }
    0
}

#[uprobe]
pub fn go_park_ready(ctx: ProbeContext) -> u32 {
    let r = go::regs(&ctx);
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // Its park was skipped (and counted): not "unmatched".
    if go::outsider(go::cookie(&ctx), tgid) {
        return 0;
    }
    // AX = *sudog; sudog.g is its first field.
    // SAFETY: bpf_probe_read_user checks the address.
    let Ok(g) = (unsafe { bpf_probe_read_user(r.rax as *const u64) }) else {
        return 0;
    };
    let key = ParkKey { tgid, _pad: 0, g };
    let Some(p) = CONTENTION_PARKED.get_ptr_mut(&key) else {
        // Parked before the probes were attached (or its entry was lost).
        bump(LockCounter::ReadyUnmatched);
        return 0;
    };
    // SAFETY: map value pointer valid for this run; start 0 = not parked.
    let parked = unsafe { *p };
    if parked.start_ns == 0 {
        bump(LockCounter::ReadyUnmatched);
        return 0;
    }
    // SAFETY: as above.
    unsafe { (*p).start_ns = 0 };
    let delay = unsafe { bpf_ktime_get_ns() }.saturating_sub(parked.start_ns);
    if parked.stack_hash == 0 {
        bump(LockCounter::ContentionStackLost);
    }
    if !add_wait(&CONTENTION, &contention_key(tgid, parked.stack_hash), delay) {
        bump(LockCounter::ContentionFull);
    }
    0
}

/// Offset of `next_pid` in the `sched_switch` record (`u32::MAX` / absent:
/// not configured) and the sampling rate.
#[inline(always)]
fn offcpu_config() -> Option<OffCpuConfig> {
    OFFCPU_CONFIG.get(0).copied()
}

#[tracepoint]
pub fn offcpu_switch(ctx: TracePointContext) -> u32 {
    let Some(conf) = offcpu_config() else {
        return 0;
    };
    if conf.every == 0 || conf.next_pid_offset > 256 {
        return 0;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    // Switch-in: a sampled thread comes back.
    // SAFETY: offset from the tracepoint's format file, checked above.
    if let Ok(next) = unsafe { ctx.read_at::<i32>(conf.next_pid_offset as usize) } {
        let next = next as u32;
        // SAFETY: plain-data value copied out.
        if let Some(start) = unsafe { OFFCPU_PENDING.get(&next) }.copied() {
            let _ = OFFCPU_PENDING.remove(&next);
            if add_wait(&OFFCPU, &start.key, now.saturating_sub(start.start_ns)) {
                bump(LockCounter::OffCpuMeasured);
            } else {
                bump(LockCounter::OffCpuFull);
            }
        }
    }
    // Switch-out: the current task is the previous one.
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    if tid == 0 || !programs::is_target(tgid) {
        return 0;
    }
    bump(LockCounter::OffCpuSwitches);
    // SAFETY: helper without arguments.
    let rnd = unsafe { bpf_get_prandom_u32() };
    if rnd % conf.every != 0 {
        return 0;
    }
    bump(LockCounter::OffCpuSampled);
    let mut stack_hash = 0;
    if let Some((ip, _sp, bp)) = programs::user_regs() {
        if let Some(w) = fpwalk::walk::<SLOT_SCHED, false>(ip, bp) {
            stack_hash = w.hash;
        }
    }
    let key = OffCpuKey {
        tgid,
        _pad: 0,
        stack_hash,
    };
    // Store the stack unless an earlier interval already stored it.
    // SAFETY: only tested for presence.
    let key = if stack_hash != 0
        && unsafe { OFFCPU.get(&key) }.is_none()
        && fpwalk::store::<SLOT_SCHED>(&OFFCPU_STACKS, stack_hash) != Stored::Yes
    {
        bump(LockCounter::OffCpuStackLost);
        OffCpuKey {
            stack_hash: 0,
            ..key
        }
    } else {
        if stack_hash == 0 {
            bump(LockCounter::OffCpuStackLost);
        }
        key
    };
    let start = OffCpuStart { start_ns: now, key };
    if OFFCPU_PENDING.insert(&tid, &start, 0).is_err() {
        bump(LockCounter::OffCpuPendingFull);
    }
    0
}
