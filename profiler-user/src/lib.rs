//! The profiler's userspace: load the eBPF sampler, follow targets, drain
//! in-kernel aggregates, and write pprof profiles.
//!
//! The `profiler` binary (`src/main.rs`) is only command-line glue around
//! [`record::record`].
#![deny(missing_docs)]

pub mod agent;
pub mod cgroup;
pub mod env;
pub mod error;
pub mod fetch;
pub mod flamegraph;
pub mod go;
pub mod record;
pub mod sampler;
