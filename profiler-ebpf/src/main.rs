//! eBPF programs of the profiler.
//!
//! * `cpu_sample` (perf_event, software CPU clock, one event per CPU):
//!   filters on target tgids/cgroups, walks the user stack's frame pointers
//!   itself (`fpwalk`, shared with the Go probes; the stack is stored once
//!   per new count key under its 64-bit hash), takes the kernel stack id
//!   with `bpf_get_stackid`, recovers the caller that frame-pointer
//!   unwinding skips when the sampled IP is in a frameless range, and
//!   counts samples (atomic adds) in a hash map keyed by [`SampleKey`]. No
//!   per-sample traffic reaches userspace.
//! * `sched_fork`, `sched_exec`, `sched_exit` (tracepoints): follow the
//!   children of targets and tell userspace when mappings change or a
//!   target exits, so it can snapshot `/proc/PID/maps` in time.
//!
//! Count and stack maps come in two generations; userspace flips
//! `CONFIG[Generation]` and drains the idle one, so draining never races
//! with updates. Every loss is counted in the per-CPU `COUNTERS` array.
//!
//! With `--ebpf-log` (`CONFIG[EbpfLog]`), rare events are also reported
//! through aya-log (`diag`): a map that filled, an unwind that stopped at an
//! unexpected frame, a failed attach-time check. Off by default, and tested
//! only on the failure branches.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// Atomic adds on map values: `AtomicU64::fetch_add` is not available on the
// BPF target (no compare-and-swap), the intrinsic is one BPF atomic add.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(target_arch = "bpf")]
mod diag;
#[cfg(target_arch = "bpf")]
mod fpwalk;
#[cfg(target_arch = "bpf")]
mod go;
#[cfg(target_arch = "bpf")]
mod lock;
#[cfg(target_arch = "bpf")]
mod programs;

#[cfg(not(target_arch = "bpf"))]
fn main() {
    // Built for the host only as a build-dependency of profiler-user; the
    // real object is built for bpfel-unknown-none by aya-build.
}
