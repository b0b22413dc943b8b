//! Processes to Kubernetes pods: parse kubelet cgroup paths into pod and
//! container identity, match label selectors, and keep a node-scoped cache
//! of pods from one Kubernetes API watch.
#![deny(missing_docs)]
