//! The `memory` profile: a container's (or any target's) memory over time,
//! sampled from the cgroup and `/proc`, written as a small pprof.
//!
//! Each sample reads, for every watched memory cgroup, cgroup v2
//! `memory.current` and `memory.stat` (`anon`, `file`), or on cgroup v1
//! `memory.usage_in_bytes` and `memory.stat` (`total_rss`,
//! `total_cache`), and the resident set (`/proc/PID/statm`) of every
//! watched process. [`MemoryUsage::profile`] writes the **mean over the
//! samples** (a process or cgroup absent from a sample counts 0 there), so
//! the values are bytes, `go tool pprof` shows them as such, and a budget
//! can cap them (`pod-memory` in `budgets/go-controller.toml`). The peak
//! and the last value are in the comments.
//!
//! Shape: sample type `memory/bytes` holds the cgroup's usage as the stack
//! `memory.current` → `anon` | `file` | `other` (what the cgroup charges
//! besides anonymous and page-cache memory: kernel, sockets...), so the
//! cumulative value of `memory.current` is the cgroup's usage; sample type
//! `rss/bytes` holds `rss` → the process's name (label `pid`).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use diff::pprof::proto::Profile;
use profiler_symbolize::{FrameLine, ProfileMeta, ProfileSample, ProfileShape, ResolvedFrame};

/// Most processes whose RSS is read per sample (more are counted).
pub const MAX_PROCESSES: usize = 4096;
/// Most memory cgroups watched.
pub const MAX_CGROUPS: usize = 1024;

/// One read of a memory cgroup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupMemory {
    /// Bytes charged (v2 `memory.current`, v1 `memory.usage_in_bytes`).
    pub current: u64,
    /// Anonymous memory (v2 `anon`, v1 `total_rss`).
    pub anon: u64,
    /// Page cache (v2 `file`, v1 `total_cache`).
    pub file: u64,
}

fn stat_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Read a memory cgroup directory (v2 or v1). `None` if it has no memory
/// accounting files or they cannot be read.
pub fn read_cgroup(dir: &Path) -> Option<CgroupMemory> {
    let num = |f: &str| -> Option<u64> {
        std::fs::read_to_string(dir.join(f))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    if let Some(current) = num("memory.current") {
        let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
        return Some(CgroupMemory {
            current,
            anon: stat_field(&stat, "anon").unwrap_or(0),
            file: stat_field(&stat, "file").unwrap_or(0),
        });
    }
    let current = num("memory.usage_in_bytes")?;
    let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
    Some(CgroupMemory {
        current,
        anon: stat_field(&stat, "total_rss")
            .or_else(|| stat_field(&stat, "rss"))
            .unwrap_or(0),
        file: stat_field(&stat, "total_cache")
            .or_else(|| stat_field(&stat, "cache"))
            .unwrap_or(0),
    })
}

/// Mount point of the cgroup v1 hierarchy holding the memory controller.
pub fn memory_v1_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mounts").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 4 && f[2] == "cgroup" && f[3].split(',').any(|o| o == "memory"))
            .then(|| PathBuf::from(f[1]))
    })
}

/// The memory cgroup of `pid`: its cgroup v2 directory if that has
/// `memory.current`, else its cgroup v1 memory directory.
pub fn memory_cgroup_of(pid: u32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for l in text.lines() {
        let mut f = l.splitn(3, ':');
        let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
        if ctrl.is_empty() {
            if let Some(m) = crate::cgroup::cgroup2_mount() {
                let d = m.join(path.trim_start_matches('/'));
                if d.join("memory.current").exists() {
                    return Some(d);
                }
            }
        }
    }
    let v1 = memory_v1_mount()?;
    text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
        ctrl.split(',')
            .any(|c| c == "memory")
            .then(|| v1.join(path.trim_start_matches('/')))
    })
}

/// The memory cgroup to read for a target cgroup directory: the directory
/// itself if it has memory accounting (v2 with the memory controller, or a
/// v1 memory directory), else the v1 memory cgroup of its first process.
pub fn memory_dir_for(dir: &Path) -> Option<PathBuf> {
    if read_cgroup(dir).is_some() {
        return Some(dir.to_path_buf());
    }
    crate::cgroup::procs_below(dir)
        .into_iter()
        .find_map(memory_cgroup_of)
}

/// Resident set of `pid` in bytes (`/proc/PID/statm`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    Some(pages * page)
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| format!("pid {pid}"))
}

/// Sum, peak and last value of one series.
#[derive(Clone, Copy, Debug, Default)]
struct Acc {
    sum: f64,
    peak: u64,
    last: u64,
}

impl Acc {
    fn add(&mut self, v: u64) {
        self.sum += v as f64;
        self.peak = self.peak.max(v);
        self.last = v;
    }
}

/// Memory samples of one window (or recording): bounded by
/// [`MAX_CGROUPS`] and [`MAX_PROCESSES`].
#[derive(Debug, Default)]
pub struct MemoryUsage {
    samples: u64,
    /// Per cgroup: current, anon, file.
    cgroups: BTreeMap<PathBuf, [Acc; 3]>,
    /// Per (pid, comm): RSS.
    procs: BTreeMap<(u32, String), Acc>,
    /// Processes not read because [`MAX_PROCESSES`] was reached (summed
    /// over samples).
    pub processes_dropped: u64,
    /// Cgroups not watched because [`MAX_CGROUPS`] was reached.
    pub cgroups_dropped: u64,
    /// Reads that failed (a cgroup gone, a file missing).
    pub read_failures: u64,
}

impl MemoryUsage {
    /// Take one sample of `cgroups` (memory cgroup directories) and the
    /// RSS of `pids`.
    pub fn sample(&mut self, cgroups: &[PathBuf], pids: &[u32]) {
        self.samples += 1;
        for dir in cgroups {
            let known = self.cgroups.contains_key(dir);
            if !known && self.cgroups.len() >= MAX_CGROUPS {
                self.cgroups_dropped += 1;
                continue;
            }
            match read_cgroup(dir) {
                Some(m) => {
                    let a = self.cgroups.entry(dir.clone()).or_default();
                    a[0].add(m.current);
                    a[1].add(m.anon);
                    a[2].add(m.file);
                }
                None => self.read_failures += 1,
            }
        }
        for (n, &pid) in pids.iter().enumerate() {
            if n >= MAX_PROCESSES {
                self.processes_dropped += (pids.len() - n) as u64;
                break;
            }
            if let Some(rss) = rss_bytes(pid) {
                let key = (pid, comm(pid));
                if !self.procs.contains_key(&key) && self.procs.len() >= MAX_PROCESSES {
                    self.processes_dropped += 1;
                    continue;
                }
                self.procs.entry(key).or_default().add(rss);
            }
        }
    }

    /// Samples taken.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Mean `memory.current` of `dir` over the samples, if watched.
    pub fn mean_current(&self, dir: &Path) -> Option<f64> {
        let a = self.cgroups.get(dir)?;
        Some(a[0].sum / self.samples.max(1) as f64)
    }

    /// The profile: means over the samples, peaks in the comments.
    pub fn profile(
        &self,
        start: SystemTime,
        duration: Duration,
        mut comments: Vec<String>,
    ) -> Profile {
        let n = self.samples.max(1) as f64;
        let mean = |a: &Acc| (a.sum / n).round() as i64;
        let mut names: Vec<String> = Vec::new();
        let mut frame = |name: &str| -> ResolvedFrame {
            let idx = match names.iter().position(|x| x == name) {
                Some(i) => i,
                None => {
                    names.push(name.to_string());
                    names.len() - 1
                }
            };
            ResolvedFrame {
                mapping: None,
                address: idx as u64 + 1,
                lines: vec![FrameLine {
                    function: name.to_string(),
                    system_name: name.to_string(),
                    file: String::new(),
                    line: 0,
                    column: 0,
                }],
            }
        };
        let mut samples = Vec::new();
        comments.push(format!(
            "memory: {} samples; values are means over the samples (bytes)",
            self.samples
        ));
        for (dir, a) in &self.cgroups {
            let (cur, anon, file) = (mean(&a[0]), mean(&a[1]), mean(&a[2]));
            let other = (cur - anon - file).max(0);
            let labels = vec![("cgroup".to_string(), dir.display().to_string())];
            for (part, v) in [("anon", anon), ("file", file), ("other", other)] {
                samples.push(ProfileSample {
                    frames: vec![frame(part), frame("memory.current")],
                    pid: 0,
                    values: vec![v, 0],
                    labels: labels.clone(),
                });
            }
            comments.push(format!(
                "memory: cgroup {}: memory.current mean {:.1} MiB, peak {:.1} MiB, last {:.1} MiB (anon mean {:.1} MiB, file mean {:.1} MiB)",
                dir.display(),
                cur as f64 / 1048576.0,
                a[0].peak as f64 / 1048576.0,
                a[0].last as f64 / 1048576.0,
                anon as f64 / 1048576.0,
                file as f64 / 1048576.0,
            ));
        }
        for ((pid, name), a) in &self.procs {
            samples.push(ProfileSample {
                frames: vec![frame(name), frame("rss")],
                pid: *pid,
                values: vec![0, mean(a)],
                labels: vec![],
            });
            comments.push(format!(
                "memory: pid {pid} ({name}): RSS mean {:.1} MiB, peak {:.1} MiB",
                mean(a) as f64 / 1048576.0,
                a.peak as f64 / 1048576.0
            ));
        }
        comments.push(format!(
            "memory: limits: processes_dropped={} cgroups_dropped={} read_failures={}",
            self.processes_dropped, self.cgroups_dropped, self.read_failures
        ));
        let shape = ProfileShape::new(
            &[("memory", "bytes"), ("rss", "bytes")],
            ("memory", "bytes"),
            0,
            Some("memory"),
        );
        let meta = ProfileMeta {
            frequency_hz: 0,
            start,
            duration,
            comments,
        };
        profiler_symbolize::build_profile(&[], &samples, &shape, &meta)
    }

    /// One-line summary per cgroup (for the terminal).
    pub fn summary(&self) -> Vec<String> {
        let n = self.samples.max(1) as f64;
        let mut out: Vec<String> = self
            .cgroups
            .iter()
            .map(|(dir, a)| {
                format!(
                    "memory: cgroup {}: mean {:.1} MiB, peak {:.1} MiB over {} samples",
                    dir.display(),
                    a[0].sum / n / 1048576.0,
                    a[0].peak as f64 / 1048576.0,
                    self.samples
                )
            })
            .collect();
        let rss: f64 = self.procs.values().map(|a| a.sum / n).sum();
        out.push(format!(
            "memory: {} process(es), RSS mean {:.1} MiB in all",
            self.procs.len(),
            rss / 1048576.0
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_memory_is_read() {
        let me = std::process::id();
        let rss = rss_bytes(me).unwrap();
        assert!(rss > 1 << 20, "rss {rss}");
        let mut u = MemoryUsage::default();
        let cg: Vec<PathBuf> = memory_cgroup_of(me).into_iter().collect();
        u.sample(&cg, &[me]);
        u.sample(&cg, &[me]);
        assert_eq!(u.samples(), 2);
        let p = u.profile(SystemTime::now(), Duration::from_secs(1), vec![]);
        let rss_total: i64 = p.sample.iter().map(|s| s.value[1]).sum();
        assert!(
            (rss_total - rss as i64).abs() < (rss as i64) / 2,
            "{rss_total} vs {rss}"
        );
        if let Some(dir) = cg.first() {
            let cur = read_cgroup(dir).unwrap().current as i64;
            let mem_total: i64 = p.sample.iter().map(|s| s.value[0]).sum();
            assert!(
                mem_total > 0 && mem_total <= cur * 2,
                "{mem_total} vs {cur}"
            );
        }
    }

    #[test]
    fn stat_fields() {
        let t = "anon 100\nfile 200\ntotal_rss 5\n";
        assert_eq!(stat_field(t, "anon"), Some(100));
        assert_eq!(stat_field(t, "file"), Some(200));
        assert_eq!(stat_field(t, "total_rss"), Some(5));
        assert_eq!(stat_field(t, "anon_thp"), None);
    }
}
