//! Processes to Kubernetes pods: parse kubelet cgroup paths into pod and
//! container identity, match label selectors, and keep a node-scoped cache
//! of pods from one Kubernetes API watch.
//!
//! The three parts are independent:
//!
//! * [`cgroup`] turns `/proc/PID/cgroup` (cgroup v1, v2 or hybrid) into a
//!   [`ContainerRef`]: pod UID, container ID, QoS class, cgroup driver and
//!   container runtime. It needs no API access, so an agent started with
//!   `--no-kube` can still attribute samples to pods by UID.
//! * [`selector`] parses and matches `kubectl -l` style label selectors.
//! * [`pods`] runs one list+watch of the pods on a node (field selector
//!   `spec.nodeName=<node>`) and keeps a bounded local cache that answers
//!   lookups by pod UID or container ID without calling the API server.
//!
//! ```
//! use profiler_kube::{parse_proc_cgroup, LabelSelector, Qos};
//! use std::collections::BTreeMap;
//!
//! let cg = "0::/kubepods.slice/kubepods-burstable.slice/\
//!           kubepods-burstable-pod6f1d2c3b_4a5e_4f60_8a7b_9c0d1e2f3a4b.slice/\
//!           cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope\n";
//! let container = parse_proc_cgroup(cg).expect("a pod's container");
//! assert_eq!(container.pod_uid, "6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b");
//! assert_eq!(container.qos, Qos::Burstable);
//!
//! let selector: LabelSelector = "app=controller,env in (prod,staging)".parse().unwrap();
//! let labels = BTreeMap::from([
//!     ("app".to_string(), "controller".to_string()),
//!     ("env".to_string(), "prod".to_string()),
//! ]);
//! assert!(selector.matches(&labels));
//! ```
#![deny(missing_docs)]

pub mod cgroup;
pub mod pods;
pub mod selector;

pub use cgroup::{parse_cgroup_path, parse_proc_cgroup, ContainerRef, Driver, Qos};
pub use pods::{
    client_from_env, spawn_pod_watch, ContainerInfo, ContainerKind, PodCache, PodInfo,
    PodWatchHandle, WatchLimits, WatchStats,
};
pub use selector::{LabelSelector, Operator, Requirement, SelectorError};

use std::fmt;

/// The container runtime that created a container, as far as it can be told.
///
/// From a cgroup path it comes from the systemd scope name
/// (`cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`);
/// the cgroupfs driver names containerd and Docker containers by bare ID,
/// which gives [`Runtime::Unknown`]. From the API it comes from the
/// `containerID` prefix (`containerd://`, `cri-o://`, `docker://`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// containerd (CRI plugin).
    Containerd,
    /// CRI-O.
    CriO,
    /// Docker (dockershim or cri-dockerd).
    Docker,
    /// Not identifiable from the available name.
    Unknown,
}

impl Runtime {
    /// The runtime for a Kubernetes `containerID` URI scheme
    /// (`containerd`, `cri-o`, `docker`); anything else is
    /// [`Runtime::Unknown`].
    pub fn from_scheme(scheme: &str) -> Runtime {
        match scheme {
            "containerd" => Runtime::Containerd,
            "cri-o" | "crio" => Runtime::CriO,
            "docker" => Runtime::Docker,
            _ => Runtime::Unknown,
        }
    }

    /// A short lowercase name: `containerd`, `cri-o`, `docker` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Docker => "docker",
            Runtime::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors from setting up Kubernetes API access.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KubeError {
    /// Neither an in-cluster service account nor a kubeconfig gave a usable
    /// client configuration.
    #[error(
        "no Kubernetes API access (tried KUBECONFIG / ~/.kube/config and the in-cluster \
         service account): {source}; mount a service account token with permission to \
         list and watch pods, set KUBECONFIG, or pass --no-kube to run on cgroup identity alone"
    )]
    NoClient {
        /// What kube-rs reported.
        #[source]
        source: kube::Error,
    },
}
