//! The profiler's userspace: load the eBPF sampler, follow targets, drain
//! in-kernel aggregates, and write pprof profiles.
//!
//! The `profiler` binary (`src/main.rs`) is only glue: the flags are
//! defined in [`cli`], the work is done by [`record::record`],
//! [`agent::run`] and [`fetch::fetch`], both of the first two over one
//! [`collector::Collector`].
#![deny(missing_docs)]

pub mod agent;
pub mod cgroup;
pub mod cli;
pub mod collector;
pub mod env;
pub mod error;
pub mod fetch;
pub mod flamegraph;
pub mod go;
pub mod launch;
pub mod memory_usage;
pub mod offcpu;
pub mod record;
pub mod sampler;
