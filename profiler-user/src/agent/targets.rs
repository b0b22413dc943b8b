//! Which processes the agent profiles: the container cgroups kubelet made
//! under the cgroup root, their pod identity (from the cgroup path, enriched
//! with Kubernetes metadata when a pod watch runs), and the selection flags.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use profiler_kube::{
    cgroup::{parse_cgroup_path, parse_proc_cgroup, ContainerRef},
    pods::PodCache,
    selector::LabelSelector,
};

use super::store::TargetId;

/// Deepest cgroup level walked below the root.
pub const MAX_SCAN_DEPTH: usize = 12;
/// Most cgroup directories looked at per scan (the rest is counted).
pub const MAX_SCAN_DIRS: usize = 100_000;

/// A container cgroup found on this node.
#[derive(Debug, Clone)]
pub struct Found {
    /// Path relative to the cgroup root, starting with `/`.
    pub rel: String,
    /// Absolute directory.
    pub path: PathBuf,
    /// cgroup v2 id (inode), what the eBPF filter matches.
    pub cgroup_id: u64,
    /// Pod and container identity parsed from the path.
    pub id: ContainerRef,
}

/// What one walk of the cgroup tree saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct ScanStats {
    /// Directories looked at.
    pub dirs: usize,
    /// True when [`MAX_SCAN_DIRS`] or [`MAX_SCAN_DEPTH`] cut the walk short.
    pub truncated: bool,
}

/// Every container cgroup below `root` (kubelet layouts, systemd and
/// cgroupfs drivers, any prefix), without descending into containers.
pub fn scan(root: &Path) -> (Vec<Found>, ScanStats) {
    use std::os::unix::fs::MetadataExt as _;
    let mut out = Vec::new();
    let mut stats = ScanStats::default();
    let mut stack: Vec<(PathBuf, usize)> = vec![(root.to_path_buf(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in rd.flatten() {
            let Ok(ft) = entry.file_type() else { continue };
            if !ft.is_dir() {
                continue;
            }
            stats.dirs += 1;
            if stats.dirs > MAX_SCAN_DIRS {
                stats.truncated = true;
                return (out, stats);
            }
            let path = entry.path();
            let Ok(rel) = path.strip_prefix(root) else {
                continue;
            };
            let rel = format!("/{}", rel.to_string_lossy());
            match parse_cgroup_path(&rel) {
                Some(id) if id.container_id.is_some() => {
                    if id.container_cgroup.as_deref() == Some(rel.as_str()) {
                        let Ok(meta) = entry.metadata() else { continue };
                        out.push(Found {
                            rel,
                            path,
                            cgroup_id: meta.ino(),
                            id,
                        });
                    }
                    // Cgroups inside a container belong to it: the eBPF
                    // filter matches ancestors, no need to look further.
                }
                _ => {
                    if depth + 1 < MAX_SCAN_DEPTH {
                        stack.push((path, depth + 1));
                    } else {
                        stats.truncated = true;
                    }
                }
            }
        }
    }
    (out, stats)
}

/// The selection flags of `profiler agent`.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// `--namespace` (any of them; empty: all).
    pub namespaces: Vec<String>,
    /// `--selector` on pod labels.
    pub selector: Option<LabelSelector>,
    /// `--container` names (any of them; empty: all).
    pub containers: Vec<String>,
    /// `--process-name`: a process's `comm` or executable file name.
    pub process_names: Vec<String>,
}

impl Selection {
    /// True when choosing needs pod metadata from Kubernetes.
    pub fn needs_metadata(&self) -> bool {
        !self.namespaces.is_empty() || self.selector.is_some() || !self.containers.is_empty()
    }
}

/// Metadata of a container's pod, when a pod watch knows it.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Names for the store.
    pub target: TargetId,
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
    /// False when the pod (or the container's name) is not known yet.
    pub from_kube: bool,
}

/// Short form of a container id (like `docker ps`), used as the container
/// name when Kubernetes metadata is missing.
pub fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

/// Names for `found`: from the pod cache when it knows the pod, else from
/// the cgroup identity alone (namespace empty, pod = pod uid, container =
/// short container id).
pub fn resolve(found: &Found, pods: Option<&PodCache>) -> Resolved {
    let container_id = found.id.container_id.clone().unwrap_or_default();
    let mut r = Resolved {
        target: TargetId {
            namespace: String::new(),
            pod: found.id.pod_uid.clone(),
            pod_uid: found.id.pod_uid.clone(),
            container: short_id(&container_id),
            container_id: container_id.clone(),
        },
        labels: BTreeMap::new(),
        from_kube: false,
    };
    let Some(pods) = pods else { return r };
    let Some(pod) = pods.get(&found.id.pod_uid) else {
        return r;
    };
    r.target.namespace = pod.namespace.clone();
    r.target.pod = pod.name.clone();
    r.labels = pod.labels.clone();
    if let Some(c) = pod
        .containers
        .iter()
        .find(|c| c.container_id.as_deref() == Some(container_id.as_str()))
    {
        r.target.container = c.name.clone();
        r.from_kube = true;
    }
    r
}

impl Selection {
    /// Whether a container with this metadata is selected. `None` means
    /// "cannot tell yet" (the filters need metadata Kubernetes has not
    /// delivered): try again at the next scan.
    pub fn accepts(&self, r: &Resolved) -> Option<bool> {
        if self.needs_metadata() && !r.from_kube {
            return None;
        }
        if !self.namespaces.is_empty() && !self.namespaces.contains(&r.target.namespace) {
            return Some(false);
        }
        if let Some(sel) = &self.selector {
            if !sel.matches(&r.labels) {
                return Some(false);
            }
        }
        if !self.containers.is_empty() && !self.containers.contains(&r.target.container) {
            return Some(false);
        }
        Some(true)
    }

    /// Whether process `tgid` passes `--process-name` (always true without
    /// the flag).
    pub fn accepts_process(&self, tgid: u32) -> bool {
        if self.process_names.is_empty() {
            return true;
        }
        let comm = std::fs::read_to_string(format!("/proc/{tgid}/comm")).unwrap_or_default();
        let exe = std::fs::read_link(format!("/proc/{tgid}/exe"))
            .ok()
            .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
            .unwrap_or_default();
        self.process_names
            .iter()
            .any(|n| n == comm.trim_end() || *n == exe)
    }
}

/// The container id of process `tgid`, from `/proc/PID/cgroup`.
pub fn container_of(tgid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{tgid}/cgroup")).ok()?;
    parse_proc_cgroup(&text)?.container_id
}

/// Bounded memo of pid -> container id (None: not in a container we
/// know, or filtered out by `--process-name`).
#[derive(Default)]
pub struct PidMap {
    map: HashMap<u32, Option<String>>,
    /// Lookups not memoized because the memo was full.
    pub overflow: u64,
}

/// Most pids memoized by [`PidMap`].
pub const MAX_PIDS: usize = 65_536;

impl PidMap {
    /// The container id of `tgid` (memoized), or None when its samples are
    /// not attributed.
    pub fn get(&mut self, tgid: u32, sel: &Selection) -> Option<String> {
        if let Some(v) = self.map.get(&tgid) {
            return v.clone();
        }
        let v = container_of(tgid).filter(|_| sel.accepts_process(tgid));
        if self.map.len() < MAX_PIDS {
            self.map.insert(tgid, v.clone());
        } else {
            self.overflow += 1;
        }
        v
    }

    /// Forget pids that no longer exist.
    pub fn retain_live(&mut self) {
        self.map
            .retain(|pid, _| Path::new(&format!("/proc/{pid}")).exists());
    }

    /// Pids memoized now.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is memoized.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
