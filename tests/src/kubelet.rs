//! cgroup v2 hierarchies laid out exactly like kubelet's (systemd and
//! cgroupfs drivers), under a test-owned folder of the cgroup v2 mount, with
//! the test's own processes moved into them. Dropping it moves those
//! processes back to the root cgroup (if still alive) and removes every
//! cgroup it made, deepest first.

use std::path::{Path, PathBuf};

/// The cgroup v2 mount (`/sys/fs/cgroup/unified` on hybrid hosts).
pub fn cgroup2_mount() -> PathBuf {
    let text = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    text.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
        })
        .expect("no cgroup v2 hierarchy mounted")
}

/// A test-owned kubelet-like hierarchy.
pub struct KubeletCgroups {
    /// The test-owned folder (pass it as `--cgroup-root`).
    pub root: PathBuf,
    mount: PathBuf,
    made: Vec<PathBuf>,
    moved: Vec<u32>,
}

/// kubelet's QoS classes.
#[derive(Clone, Copy, Debug)]
pub enum Qos {
    /// Directly under `kubepods`.
    Guaranteed,
    /// Under `burstable`.
    Burstable,
    /// Under `besteffort`.
    BestEffort,
}

impl KubeletCgroups {
    /// A fresh folder `profiler-test-<tag>-<pid>` under the cgroup v2 mount.
    pub fn new(tag: &str) -> KubeletCgroups {
        KubeletCgroups::in_hierarchy(tag, cgroup2_mount())
    }

    /// The same under another mounted hierarchy, e.g. the cgroup v1
    /// `/sys/fs/cgroup/pids` of a hybrid host.
    pub fn in_hierarchy(tag: &str, mount: PathBuf) -> KubeletCgroups {
        let root = mount.join(format!("profiler-test-{tag}-{}", std::process::id()));
        let mut k = KubeletCgroups {
            root: root.clone(),
            mount,
            made: Vec::new(),
            moved: Vec::new(),
        };
        k.mkdir(&root);
        k
    }

    fn mkdir(&mut self, p: &Path) {
        if !p.exists() {
            std::fs::create_dir(p)
                .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", p.display()));
            self.made.push(p.to_path_buf());
        }
    }

    fn mkdirs(&mut self, rel: &str) -> PathBuf {
        let mut p = self.root.clone();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            p = p.join(part);
            self.mkdir(&p);
        }
        p
    }

    /// systemd driver: `kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice/<prefix>-<id>.scope`
    /// (`prefix`: `cri-containerd`, `crio` or `docker`).
    pub fn systemd_container(
        &mut self,
        qos: Qos,
        pod_uid: &str,
        prefix: &str,
        id: &str,
    ) -> PathBuf {
        let uid = pod_uid.replace('-', "_");
        let rel = match qos {
            Qos::Guaranteed => format!("kubepods.slice/kubepods-pod{uid}.slice/{prefix}-{id}.scope"),
            Qos::Burstable => format!(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/{prefix}-{id}.scope"
            ),
            Qos::BestEffort => format!(
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid}.slice/{prefix}-{id}.scope"
            ),
        };
        self.mkdirs(&rel)
    }

    /// cgroupfs driver: `kubepods/<qos>/pod<uid>/<id>` (guaranteed: `kubepods/pod<uid>/<id>`).
    pub fn cgroupfs_container(&mut self, qos: Qos, pod_uid: &str, id: &str) -> PathBuf {
        let rel = match qos {
            Qos::Guaranteed => format!("kubepods/pod{pod_uid}/{id}"),
            Qos::Burstable => format!("kubepods/burstable/pod{pod_uid}/{id}"),
            Qos::BestEffort => format!("kubepods/besteffort/pod{pod_uid}/{id}"),
        };
        self.mkdirs(&rel)
    }

    /// Move a process the test started into `cgroup`.
    pub fn add_process(&mut self, cgroup: &Path, pid: u32) {
        std::fs::write(cgroup.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("moving pid {pid} into {}: {e}", cgroup.display()));
        self.moved.push(pid);
    }
}

impl Drop for KubeletCgroups {
    fn drop(&mut self) {
        for pid in &self.moved {
            let _ = std::fs::write(self.mount.join("cgroup.procs"), pid.to_string());
        }
        for p in self.made.iter().rev() {
            // A just-killed process may linger for a moment.
            for _ in 0..50 {
                if std::fs::remove_dir(p).is_ok() || !p.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

/// A 64-hex container id derived from `seed`.
pub fn container_id(seed: u64) -> String {
    let mut s = String::new();
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while s.len() < 64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(&format!("{x:016x}"));
    }
    s.truncate(64);
    s
}

/// A pod uid (RFC 4122 shape) derived from `seed`.
pub fn pod_uid(seed: u64) -> String {
    let h = container_id(seed ^ 0x5555);
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// The pod uid and container id derived from `seed` (one pod with one
/// container): `(pod_uid(seed), container_id(seed))`.
pub fn pod_ids(seed: u64) -> (String, String) {
    (pod_uid(seed), container_id(seed))
}
