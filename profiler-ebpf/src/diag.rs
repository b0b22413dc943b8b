//! Diagnostics of rare events through aya-log (`--ebpf-log`), off by
//! default.
//!
//! Callers test [`enabled`] only after they detected a rare event (an
//! insert that failed because a map is full, an unwind that stopped at an
//! unexpected frame, a failed attach-time check), so a program run that
//! meets none pays nothing: the `CONFIG[EbpfLog]` lookup, the rate limit
//! and the aya-log record are all on the failure branch. At most one
//! message per CPU per [`EBPF_LOG_INTERVAL_NS`]; events over the limit are
//! counted in `LOG_STATE[Suppressed]`.
use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::map, maps::PerCpuArray};
use profiler_common::{Config, LogState, EBPF_LOG_INTERVAL_NS};

use crate::fpwalk::atomic_add;

/// Per-CPU rate-limit state and message counts ([`LogState`]).
#[map]
static LOG_STATE: PerCpuArray<u64> = PerCpuArray::with_max_entries(LogState::COUNT, 0);

/// Call after a rare event: true when `--ebpf-log` is on and this CPU may
/// write a message now (then the caller logs exactly one record). Races
/// between a perf_event program and the uprobe program it interrupted make
/// the limit approximate, never unbounded.
#[inline(never)]
pub fn enabled() -> bool {
    if crate::programs::config(Config::EbpfLog) == 0 {
        return false;
    }
    let (Some(last), Some(emitted), Some(suppressed)) = (
        LOG_STATE.get_ptr_mut(LogState::LastNs as u32),
        LOG_STATE.get_ptr_mut(LogState::Emitted as u32),
        LOG_STATE.get_ptr_mut(LogState::Suppressed as u32),
    ) else {
        return false;
    };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: this CPU's slot of a map value, valid for this run.
    let prev = unsafe { core::ptr::read_volatile(last) };
    if prev != 0 && now.wrapping_sub(prev) < EBPF_LOG_INTERVAL_NS {
        atomic_add(suppressed, 1);
        return false;
    }
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(last, now) };
    atomic_add(emitted, 1);
    true
}
