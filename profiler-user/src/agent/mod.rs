//! `profiler agent`: continuous per-pod profiles for test clusters, written
//! per time window into a local store and served over HTTP.

pub mod api;
pub mod metrics;
pub mod store;
