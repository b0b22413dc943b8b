//! Read, normalize, compare and gate pprof profiles.
//!
//! This crate is the library behind the `profdiff` binary. It has no eBPF
//! and no async dependencies so that any CI runner can use it.
#![deny(missing_docs)]

pub mod pprof;
pub mod profile;

pub use profile::{Frame, FrameId, FrameKind, LabelValue, Profile, Sample, ValueType};
