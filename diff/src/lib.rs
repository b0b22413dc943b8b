//! Read, normalize, compare and gate pprof profiles.
//!
//! This crate is the library behind the `profdiff` binary. It has no eBPF
//! and no async dependencies so that any CI runner can use it.
#![deny(missing_docs)]

#[cfg(feature = "cli")]
pub mod cli;
pub mod error;
mod fastload;
pub mod folded;
pub mod input;
pub mod legacy;
pub mod pprof;
pub mod profile;
pub mod top;
// compare/gate side
pub mod budgets;
pub mod compare;
pub mod diffgraph;
pub mod gate;
pub mod normalize;
pub mod quantile;
pub mod report;
pub mod stacks;
pub mod stats;

pub use profile::{Frame, FrameId, FrameKind, LabelValue, Profile, Sample, ValueType};
