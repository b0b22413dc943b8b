//! cgroup v2 helpers: find the mount, list processes below a cgroup.

use std::path::{Path, PathBuf};

/// Mount point of the cgroup v2 hierarchy (`/sys/fs/cgroup` on unified
/// hosts, `/sys/fs/cgroup/unified` on hybrid ones).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mounts").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let _src = f.next()?;
        let dir = f.next()?;
        (f.next()? == "cgroup2").then(|| PathBuf::from(dir))
    })
}

/// Every pid in `dir` or any cgroup below it (bounded to 65536).
pub fn procs_below(dir: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
            out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if out.len() >= 65536 {
            break;
        }
        if let Ok(rd) = std::fs::read_dir(&d) {
            stack.extend(rd.flatten().filter(|e| e.path().is_dir()).map(|e| e.path()));
        }
    }
    out
}

/// True when `id` is a process (its own thread-group leader), false for a
/// thread of another process or a vanished id.
pub fn is_process(id: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{id}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse::<u32>().ok())
        == Some(id)
}

/// True when `dir` is on a cgroup v1 hierarchy (not cgroup2): the eBPF
/// cgroup-id filter only sees v2 ids, so v1 targets are followed by pid.
pub fn is_cgroup_v1(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    const CGROUP_SUPER_MAGIC: i64 = 0x27e0eb;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: zeroed statfs is a valid out-parameter; `c` is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    st.f_type as i64 == CGROUP_SUPER_MAGIC
}

/// A cgroup v1 hierarchy to scan when no cgroup v2 is mounted (pure v1
/// hosts): the first of pids, cpu,cpuacct, memory and name=systemd.
pub fn cgroup1_default() -> Option<PathBuf> {
    ["pids", "cpu,cpuacct", "cpu", "memory", "systemd"]
        .iter()
        .map(|d| Path::new("/sys/fs/cgroup").join(d))
        .find(|p| p.join("cgroup.procs").exists() && is_cgroup_v1(p))
}
