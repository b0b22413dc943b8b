//! Library target so profiler-user can list this crate as a build-dependency
//! (a change here then rebuilds the embedded object).
#![no_std]
