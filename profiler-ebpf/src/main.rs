//! eBPF programs of the profiler.
//!
//! * `cpu_sample` (perf_event, software CPU clock, one event per CPU):
//!   filters on target tgids/cgroups, takes user and kernel stack ids with
//!   `bpf_get_stackid` (frame-pointer unwinding), recovers the caller that
//!   frame-pointer unwinding skips when the sampled IP is in a frameless
//!   range, and counts samples in a hash map keyed by [`SampleKey`]. No
//!   per-sample traffic reaches userspace.
//! * `sched_fork`, `sched_exec`, `sched_exit` (tracepoints): follow the
//!   children of targets and tell userspace when mappings change or a
//!   target exits, so it can snapshot `/proc/PID/maps` in time.
//!
//! Count and stack maps come in two generations; userspace flips
//! `CONFIG[Generation]` and drains the idle one, so draining never races
//! with updates. Every loss is counted in the per-CPU `COUNTERS` array.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod go;
#[cfg(target_arch = "bpf")]
mod programs;

#[cfg(not(target_arch = "bpf"))]
fn main() {
    // Built for the host only as a build-dependency of profiler-user; the
    // real object is built for bpfel-unknown-none by aya-build.
}
