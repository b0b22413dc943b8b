//! Kubelet cgroup paths to pod and container identity.
//!
//! The kubelet puts every pod in a cgroup named after its UID, below a
//! `kubepods` cgroup and (for Burstable and BestEffort pods) a QoS-class
//! cgroup; the container runtime then creates one cgroup per container
//! below that. Two naming schemes exist, chosen by the kubelet's
//! `cgroupDriver`:
//!
//! | driver | path |
//! |---|---|
//! | systemd | `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope` |
//! | cgroupfs | `/kubepods/burstable/pod<uid>/<id>` |
//!
//! Guaranteed pods sit directly below `kubepods` (`kubepods-pod<uid>.slice`,
//! `/kubepods/pod<uid>`). The `kubepods` cgroup may itself be nested under
//! any prefix — a `--cgroup-root` (`/kubelet.slice/kubelet-kubepods.slice`),
//! a test harness's cgroup, or a kind node's own container
//! (`/system.slice/docker-<id>.scope/kubepods/...`) — so the parser looks
//! for the first `kubepods` component anywhere in the path and ignores what
//! comes before it.
//!
//! # Container IDs
//!
//! A container ID is 64 lowercase hex digits, as containerd, CRI-O and
//! Docker all generate. The container component is recognised as:
//!
//! * `cri-containerd-<id>.scope` (containerd, systemd driver),
//! * `crio-<id>.scope` or `crio-<id>` (CRI-O, either driver),
//! * `docker-<id>.scope` (Docker / cri-dockerd, systemd driver),
//! * `<id>` (cgroupfs driver; the runtime is [`Runtime::Unknown`]).
//!
//! The pod sandbox ("pause") container looks like any other container in
//! its cgroup name, so it is reported with its ID; the API lists no status
//! for it, so a lookup of that ID in a [`crate::PodCache`] finds nothing,
//! but [`ContainerRef::pod_uid`] still names the pod.
//!
//! CRI-O's monitor process, conmon, runs in a `crio-conmon-<id>.scope`
//! cgroup next to the container's. It is not a container: such a path gives
//! `container_id: None`, `container_cgroup: None` and the monitored
//! container's ID in [`ContainerRef::conmon_for`].
//!
//! Components below the container cgroup (a container that creates its own
//! sub-cgroups, e.g. systemd inside a container) are ignored: the identity
//! is that of the container.
//!
//! Paths without a `kubepods` component (`/`, `/user.slice/...`,
//! `/system.slice/containerd.service`) and `kubepods` paths above the pod
//! level (`/kubepods.slice/kubepods-burstable.slice`) give `None`.
//!
//! # Static pods
//!
//! A static pod's cgroup carries the kubelet's own UID for it (32 hex
//! digits, no dashes), not the UID of the mirror pod in the API; the mirror
//! pod has it in the `kubernetes.io/config.mirror` annotation, which
//! [`crate::PodCache::get`] also indexes.

use crate::Runtime;

/// A pod's Quality-of-Service class, from the kubelet's cgroup hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Qos {
    /// Requests equal limits for every resource; the pod cgroup sits
    /// directly below `kubepods`.
    Guaranteed,
    /// Some requests set; below `kubepods/burstable`.
    Burstable,
    /// No requests or limits; below `kubepods/besteffort`.
    BestEffort,
}

impl Qos {
    /// The Kubernetes name of the class: `Guaranteed`, `Burstable`,
    /// `BestEffort`.
    pub fn as_str(self) -> &'static str {
        match self {
            Qos::Guaranteed => "Guaranteed",
            Qos::Burstable => "Burstable",
            Qos::BestEffort => "BestEffort",
        }
    }
}

impl std::fmt::Display for Qos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kubelet's cgroup driver, told apart by the naming scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Driver {
    /// systemd slices and scopes (`kubepods.slice`, `...pod<uid>.slice`).
    Systemd,
    /// Plain directories (`kubepods/burstable/pod<uid>`).
    Cgroupfs,
}

/// The pod and container that a cgroup path belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerRef {
    /// The pod UID in its usual form: lowercase, with dashes
    /// (`6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b`; the systemd driver writes
    /// the dashes as `_`). A static pod's UID is 32 hex digits without
    /// dashes (see the [module docs](self#static-pods)).
    pub pod_uid: String,
    /// The container ID (64 lowercase hex digits), or `None` for a path
    /// that ends at the pod cgroup, at a CRI-O conmon scope, or at a child
    /// of the pod cgroup that is not recognisably a container.
    pub container_id: Option<String>,
    /// The pod's QoS class.
    pub qos: Qos,
    /// The kubelet's cgroup driver.
    pub driver: Driver,
    /// The runtime, when the container cgroup name tells it
    /// ([`Runtime::Unknown`] for bare cgroupfs IDs and pod-level paths).
    pub runtime: Runtime,
    /// The path prefix up to and including the pod cgroup, with a leading
    /// `/` (and whatever came before `kubepods`).
    pub pod_cgroup: String,
    /// The path prefix up to and including the container cgroup, when
    /// there is a container.
    pub container_cgroup: Option<String>,
    /// For a CRI-O `crio-conmon-<id>.scope` path: the ID of the container
    /// that this conmon process monitors.
    pub conmon_for: Option<String>,
}

/// Parses one cgroup path (as in `/proc/PID/cgroup` or relative to a cgroup
/// mount) into the pod and container it belongs to, or `None` when it is
/// not inside a Kubernetes pod.
///
/// A trailing ` (deleted)` (the kernel's marker for a removed cgroup) is
/// ignored. See the [module docs](self) for the supported layouts.
pub fn parse_cgroup_path(path: &str) -> Option<ContainerRef> {
    let path = path.trim_end();
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let root = components.iter().position(|c| is_kubepods(c))?;
    let driver = if components[root].ends_with(".slice") {
        Driver::Systemd
    } else {
        Driver::Cgroupfs
    };

    let mut qos = Qos::Guaranteed;
    let mut idx = root + 1;
    // An optional QoS-class level, then the pod level.
    let pod_uid = loop {
        let component = components.get(idx)?;
        let level = match driver {
            Driver::Systemd => systemd_level(component)?,
            Driver::Cgroupfs => cgroupfs_level(component)?,
        };
        match level {
            Level::Qos(q) if idx == root + 1 => qos = q,
            Level::Qos(_) => return None,
            Level::Pod(uid) => break uid,
        }
        idx += 1;
    };
    let pod_idx = idx;
    let prefix = |end: usize| format!("/{}", components[..=end].join("/"));

    let mut out = ContainerRef {
        pod_uid,
        container_id: None,
        qos,
        driver,
        runtime: Runtime::Unknown,
        pod_cgroup: prefix(pod_idx),
        container_cgroup: None,
        conmon_for: None,
    };
    if let Some(component) = components.get(pod_idx + 1) {
        match parse_container(component, driver) {
            Some(Leaf::Container(runtime, id)) => {
                out.runtime = runtime;
                out.container_id = Some(id);
                out.container_cgroup = Some(prefix(pod_idx + 1));
            }
            Some(Leaf::Conmon(id)) => {
                out.runtime = Runtime::CriO;
                out.conmon_for = Some(id);
            }
            None => {}
        }
    }
    Some(out)
}

/// Parses the whole text of `/proc/PID/cgroup` into the pod and container
/// the process belongs to, or `None` when no line is inside a pod.
///
/// Handles cgroup v2 (`0::/path`), v1 (`N:controllers:/path`) and hybrid
/// hosts (both). Lines are tried in this order and the first that parses
/// wins: the v1 `pids`, `cpu`/`cpuacct`, `memory` and `name=systemd`
/// hierarchies (which the kubelet manages on v1 and hybrid hosts), then the
/// v2 line, then any other line. On hybrid hosts with the cgroupfs driver
/// the v2 line does not name the pod, which is why v1 lines come first.
pub fn parse_proc_cgroup(contents: &str) -> Option<ContainerRef> {
    let mut candidates: Vec<(u8, &str)> = contents
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let hierarchy = fields.next()?;
            let controllers = fields.next()?;
            let path = fields.next()?;
            let rank = if hierarchy == "0" && controllers.is_empty() {
                4
            } else {
                controllers
                    .split(',')
                    .filter_map(|c| match c {
                        "pids" => Some(0),
                        "cpu" | "cpuacct" => Some(1),
                        "memory" => Some(2),
                        "name=systemd" => Some(3),
                        _ => None,
                    })
                    .min()
                    .unwrap_or(5)
            };
            Some((rank, path))
        })
        .collect();
    candidates.sort_by_key(|&(rank, _)| rank);
    candidates
        .into_iter()
        .find_map(|(_, path)| parse_cgroup_path(path))
}

/// Whether a path component is the kubelet's top-level cgroup:
/// `kubepods`, `kubepods.slice`, or a `--cgroup-root`-prefixed slice such
/// as `kubelet-kubepods.slice`.
fn is_kubepods(component: &str) -> bool {
    component == "kubepods"
        || component == "kubepods.slice"
        || component.ends_with("-kubepods.slice")
}

enum Level {
    Qos(Qos),
    Pod(String),
}

fn qos_name(name: &str) -> Option<Qos> {
    match name {
        "burstable" => Some(Qos::Burstable),
        "besteffort" => Some(Qos::BestEffort),
        _ => None,
    }
}

/// `[<root>-]kubepods-burstable.slice` or `[<root>-]kubepods[-<qos>]-pod<uid>.slice`.
fn systemd_level(component: &str) -> Option<Level> {
    let stem = component.strip_suffix(".slice")?;
    let (_, rest) = stem.rsplit_once("kubepods-")?;
    if let Some(qos) = qos_name(rest) {
        return Some(Level::Qos(qos));
    }
    let uid = match rest.split_once('-') {
        Some((q, pod)) => {
            qos_name(q)?;
            pod.strip_prefix("pod")?
        }
        None => rest.strip_prefix("pod")?,
    };
    normalize_uid(&uid.replace('_', "-")).map(Level::Pod)
}

/// `burstable`, `besteffort` or `pod<uid>`.
fn cgroupfs_level(component: &str) -> Option<Level> {
    if let Some(qos) = qos_name(component) {
        return Some(Level::Qos(qos));
    }
    normalize_uid(component.strip_prefix("pod")?).map(Level::Pod)
}

/// Lowercases a UID and checks that it is a dashed UUID (8-4-4-4-12 hex) or
/// a 32-hex static pod UID.
fn normalize_uid(uid: &str) -> Option<String> {
    let uid = uid.to_ascii_lowercase();
    let groups: Vec<&str> = uid.split('-').collect();
    let ok = match groups.as_slice() {
        [single] => single.len() == 32 && is_hex(single),
        [a, b, c, d, e] => {
            [a.len(), b.len(), c.len(), d.len(), e.len()] == [8, 4, 4, 4, 12]
                && groups.iter().all(|g| is_hex(g))
        }
        _ => false,
    };
    ok.then_some(uid)
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn container_id(s: &str) -> Option<String> {
    (s.len() == 64 && is_hex(s)).then(|| s.to_ascii_lowercase())
}

enum Leaf {
    Container(Runtime, String),
    Conmon(String),
}

fn parse_container(component: &str, driver: Driver) -> Option<Leaf> {
    let stem = component.strip_suffix(".scope").unwrap_or(component);
    if let Some(id) = stem.strip_prefix("crio-conmon-") {
        return container_id(id).map(Leaf::Conmon);
    }
    let prefixed = [
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::CriO),
        ("docker-", Runtime::Docker),
    ];
    for (prefix, runtime) in prefixed {
        if let Some(id) = stem.strip_prefix(prefix) {
            return container_id(id).map(|id| Leaf::Container(runtime, id));
        }
    }
    // The cgroupfs driver names containerd and Docker containers by bare ID.
    if driver == Driver::Cgroupfs && stem.len() == component.len() {
        return container_id(component).map(|id| Leaf::Container(Runtime::Unknown, id));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b";
    const UID_: &str = "6f1d2c3b_4a5e_4f60_8a7b_9c0d1e2f3a4b";
    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn parse(path: &str) -> ContainerRef {
        parse_cgroup_path(path).unwrap_or_else(|| panic!("no pod in {path}"))
    }

    #[test]
    fn systemd_burstable_containerd() {
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"
        );
        let c = parse(&path);
        assert_eq!(c.pod_uid, UID);
        assert_eq!(c.container_id.as_deref(), Some(ID));
        assert_eq!(c.qos, Qos::Burstable);
        assert_eq!(c.driver, Driver::Systemd);
        assert_eq!(c.runtime, Runtime::Containerd);
        assert_eq!(
            c.pod_cgroup,
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice")
        );
        assert_eq!(c.container_cgroup.as_deref(), Some(path.as_str()));
        assert_eq!(c.conmon_for, None);
    }

    #[test]
    fn systemd_guaranteed_and_besteffort() {
        let c = parse(&format!(
            "/kubepods.slice/kubepods-pod{UID_}.slice/crio-{ID}.scope"
        ));
        assert_eq!((c.qos, c.runtime), (Qos::Guaranteed, Runtime::CriO));
        let c = parse(&format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/docker-{ID}.scope"
        ));
        assert_eq!((c.qos, c.runtime), (Qos::BestEffort, Runtime::Docker));
        assert_eq!(c.container_id.as_deref(), Some(ID));
    }

    #[test]
    fn cgroupfs_layouts() {
        for (path, qos) in [
            (format!("/kubepods/burstable/pod{UID}/{ID}"), Qos::Burstable),
            (
                format!("/kubepods/besteffort/pod{UID}/{ID}"),
                Qos::BestEffort,
            ),
            (format!("/kubepods/pod{UID}/{ID}"), Qos::Guaranteed),
        ] {
            let c = parse(&path);
            assert_eq!(c.qos, qos, "{path}");
            assert_eq!(c.driver, Driver::Cgroupfs);
            assert_eq!(c.runtime, Runtime::Unknown);
            assert_eq!(c.container_id.as_deref(), Some(ID));
            assert_eq!(c.container_cgroup.as_deref(), Some(path.as_str()));
        }
        let c = parse(&format!("/kubepods/burstable/pod{UID}/crio-{ID}"));
        assert_eq!(c.runtime, Runtime::CriO);
        assert_eq!(c.container_id.as_deref(), Some(ID));
    }

    #[test]
    fn nested_under_any_prefix() {
        let c = parse(&format!(
            "/profiler-test-123/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"
        ));
        assert!(c
            .pod_cgroup
            .starts_with("/profiler-test-123/kubepods.slice/"));
        let kind = format!("/system.slice/docker-{ID}.scope/kubepods/besteffort/pod{UID}/{ID}");
        let c = parse(&kind);
        assert_eq!(c.qos, Qos::BestEffort);
        assert_eq!(
            c.runtime,
            Runtime::Unknown,
            "the kind node's docker scope is not the pod's"
        );
        let c = parse(&format!(
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"
        ));
        assert_eq!((c.qos, c.pod_uid.as_str()), (Qos::BestEffort, UID));
    }

    #[test]
    fn pod_level_conmon_and_subcgroups() {
        let c = parse(&format!("/kubepods/burstable/pod{UID}"));
        assert_eq!(c.container_id, None);
        assert_eq!(c.container_cgroup, None);
        assert_eq!(c.pod_cgroup, format!("/kubepods/burstable/pod{UID}"));

        let c = parse(&format!(
            "/kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{ID}.scope"
        ));
        assert_eq!(c.container_id, None);
        assert_eq!(c.conmon_for.as_deref(), Some(ID));
        assert_eq!(c.runtime, Runtime::CriO);

        let c = parse(&format!(
            "/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope/init.scope"
        ));
        assert_eq!(c.container_id.as_deref(), Some(ID));
        assert!(c.container_cgroup.unwrap().ends_with(".scope"));
    }

    #[test]
    fn not_kubernetes() {
        for path in [
            "/",
            "",
            "/user.slice/user-1000.slice/session-2.scope",
            "/system.slice/containerd.service",
            "/kubepods.slice",
            "/kubepods.slice/kubepods-burstable.slice",
            "/kubepods/burstable",
            "/kubepods/burstable/podnot-a-uid/abc",
            "/kubepods/burstable/besteffort/pod6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b",
            "/mykubepods/pod6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b",
        ] {
            assert_eq!(parse_cgroup_path(path), None, "{path:?}");
        }
    }

    #[test]
    fn static_pod_uid_and_uppercase() {
        let c = parse("/kubepods/burstable/pod3D2B0C1F5E8A7B6C4D2E1F0A9B8C7D6E");
        assert_eq!(c.pod_uid, "3d2b0c1f5e8a7b6c4d2e1f0a9b8c7d6e");
    }

    #[test]
    fn deleted_marker() {
        let c = parse(&format!("/kubepods/pod{UID}/{ID} (deleted)"));
        assert_eq!(c.container_id.as_deref(), Some(ID));
    }

    #[test]
    fn proc_cgroup_v2_v1_hybrid() {
        let v2 = format!("0::/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope\n");
        assert_eq!(parse_proc_cgroup(&v2).unwrap().pod_uid, UID);

        let v1 = format!(
            "12:pids:/kubepods/burstable/pod{UID}/{ID}\n\
             11:cpu,cpuacct:/kubepods/burstable/pod{UID}/{ID}\n\
             3:devices:/kubepods/burstable/pod{UID}/{ID}\n\
             1:name=systemd:/kubepods/burstable/pod{UID}/{ID}\n"
        );
        let c = parse_proc_cgroup(&v1).unwrap();
        assert_eq!(
            (c.qos, c.container_id.as_deref()),
            (Qos::Burstable, Some(ID))
        );

        // Hybrid host, cgroupfs driver: the unified line does not name the pod.
        let hybrid = format!(
            "13:memory:/kubepods/besteffort/pod{UID}/{ID}\n\
             1:name=systemd:/system.slice/containerd.service\n\
             0::/system.slice/containerd.service\n"
        );
        assert_eq!(parse_proc_cgroup(&hybrid).unwrap().qos, Qos::BestEffort);

        let host = "0::/user.slice/user-1000.slice/session-2.scope\n";
        assert_eq!(parse_proc_cgroup(host), None);
        assert_eq!(parse_proc_cgroup(""), None);
    }

    #[test]
    fn proc_cgroup_prefers_pids_line() {
        let other = "aaaaaaaa-4a5e-4f60-8a7b-9c0d1e2f3a4b";
        let text = format!(
            "5:blkio:/kubepods/pod{other}/{ID}\n\
             0::/kubepods/pod{other}/{ID}\n\
             7:pids:/kubepods/pod{UID}/{ID}\n"
        );
        assert_eq!(parse_proc_cgroup(&text).unwrap().pod_uid, UID);
    }
}
