//! The integration tests of profiler-kube, one binary with topic modules.

#[path = "it/cgroup_table.rs"]
mod cgroup_table;
#[path = "it/pod_watch.rs"]
mod pod_watch;
