//! The agent's `memory` profile type: every `--memory-interval` the loop
//! samples each profiled container's memory cgroup (cgroup v2
//! `memory.current`/`memory.stat` of the container's own directory, or on
//! hosts whose memory controller is on cgroup v1 the v1 memory cgroup of
//! the container's processes) and its processes' RSS
//! ([`crate::memory_usage`]); at the end of the window each container
//! gets one `memory` profile (means over the window's samples) in the
//! store, beside its `cpu` profile. The store averages merged `memory`
//! windows over time (see [`super::store::Store::query`]), so a fetched
//! range reads as the pod's mean memory, which a `pod-memory` budget caps.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::memory_usage::MemoryUsage;

/// Memory samples of the current window, per container id.
#[derive(Default)]
pub(super) struct MemoryWindow {
    /// Per container id.
    pub(super) per_container: HashMap<String, MemoryUsage>,
    /// Memory cgroup directory of each container (found once; cgroup v1
    /// lookups read a process's `/proc/PID/cgroup`).
    dirs: HashMap<String, PathBuf>,
    last: Option<Instant>,
}

impl MemoryWindow {
    /// True when `interval` (non-zero) has passed since the last sample.
    pub(super) fn due(&self, interval: Duration) -> bool {
        !interval.is_zero() && self.last.is_none_or(|t| t.elapsed() >= interval)
    }

    /// Sample every container in `targets` (container id, cgroup dir).
    /// Bounded by the agent's target limit; a container whose memory
    /// cgroup cannot be found still gets its processes' RSS.
    pub(super) fn sample<'a>(&mut self, targets: impl Iterator<Item = (&'a String, &'a Path)>) {
        self.last = Some(Instant::now());
        for (cid, dir) in targets {
            let mem = match self.dirs.get(cid) {
                Some(d) => Some(d.clone()),
                None => {
                    let d = crate::memory_usage::memory_dir_for(dir);
                    if let Some(d) = &d {
                        self.dirs.insert(cid.clone(), d.clone());
                    }
                    d
                }
            };
            let pids = crate::cgroup::procs_below(dir);
            let dirs: Vec<PathBuf> = mem.into_iter().collect();
            self.per_container
                .entry(cid.clone())
                .or_default()
                .sample(&dirs, &pids);
        }
    }

    /// Take the window's samples (the next window starts empty) and forget
    /// the directories of containers no longer in `live`.
    pub(super) fn take(&mut self, live: impl Fn(&str) -> bool) -> HashMap<String, MemoryUsage> {
        self.dirs.retain(|cid, _| live(cid));
        std::mem::take(&mut self.per_container)
    }
}
