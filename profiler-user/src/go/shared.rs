//! The agent's mode of the Go probes: probes attached ONCE PER BINARY
//! (keyed by the device and inode of `/proc/PID/exe`, so a binary inside a
//! container's filesystem is recognised whatever its path), for every
//! process running it (`UProbeScope::AllProcesses`) with
//! [`COOKIE_FILTER_PROCS`]: the programs return at once for a process that
//! is not in `GO_PROCS`, i.e. not a selected target. A binary's probes are
//! detached when the last target process running it is gone.
//!
//! Per window, [`GoSession::window`] turns the cumulative kernel counts
//! into per-window profiles per group of processes (a container): calls
//! and allocations as the difference since the previous window; goroutines
//! as the snapshot of live goroutines at the window's end (created while
//! attached, plus those from before attaching walked from
//! `runtime.allgs`) with the created and exited counts of the window.
//!
//! Bounds: [`MAX_BINARIES`] binaries, [`GO_PROC_ENTRIES`] processes,
//! [`MAX_PROBES`] uprobes, the kernel maps' own capacities; everything
//! over them is counted in [`SharedStats`].

use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt as _,
};

use aya::programs::{uprobe::UProbeLinkId, UProbe};
use diff::pprof::proto::Profile;
use profiler_common::go::{GoCounter, GoProcConfig, GoStackKey, SiteCounts, GO_PROC_ENTRIES};
use profiler_symbolize::{ProfileMeta, ProfileShape, Symbolizer};

use super::{binary::GOffsets, calls::spread_over_stacks, session::Finish, GoSession, Proc};
use crate::{error::RecordError, sampler::Sampler};

/// Distinct binaries with probes attached at once.
pub const MAX_BINARIES: usize = 256;
/// Uprobes attached at once over all binaries.
pub const MAX_PROBES: u64 = 8192;
/// Non-Go binaries remembered (cleared when full).
const MAX_NOT_GO: usize = 4096;

/// (device, inode) of an executable.
pub(super) type BinKey = (u64, u64);

/// What a later process of an already-probed binary needs.
pub(super) struct SharedBinary {
    /// The probes (program name, link) attached for every process.
    links: Vec<(&'static str, UProbeLinkId)>,
    /// Target processes running it now.
    procs: HashSet<u32>,
    /// PT_LOAD segments (vaddr, memsz, file offset, filesz), for load biases.
    segments: Vec<(u64, u64, u64, u64)>,
    /// The first process's facts (addresses without its load bias).
    template: Proc,
    offsets: GOffsets,
}

/// Counters and gauges of the per-binary probes (exported in `/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SharedStats {
    /// Binaries with probes attached now.
    pub binaries: u64,
    /// Target processes with Go probes now.
    pub processes: u64,
    /// Uprobes attached now.
    pub probes: u64,
    /// Binaries not probed because [`MAX_BINARIES`] were.
    pub binaries_overflow: u64,
    /// Processes not tracked because `GO_PROCS` was full.
    pub processes_overflow: u64,
    /// Binaries not probed because [`MAX_PROBES`] uprobes were attached.
    pub probes_overflow: u64,
    /// Binaries whose probes were detached (last process gone).
    pub binaries_detached: u64,
    /// Distinct stacks of the Go maps (stacks read at the last window).
    pub stacks: u64,
    /// Hits of shared probes by processes that are not targets.
    pub not_target_hits: u64,
    /// Stacks removed from `GO_FP_STACKS` once no count key of a live
    /// process referred to them.
    pub stacks_released: u64,
    /// Entries in `GO_LAT_HIST` at the last window (latency).
    pub latency_cells: u64,
    /// Entries in `CONTENTION` at the last window (contention).
    pub contention_cells: u64,
    /// Latency/contention entries of processes that run a probed binary
    /// but are not targets, removed at the windows.
    pub outsider_keys_removed: u64,
    /// Heap profile: processes whose buckets were read.
    pub heap_reads: u64,
    /// Heap profile: bytes of buckets read.
    pub heap_bytes_read: u64,
    /// Heap profile: reads skipped because a window's limits
    /// ([`MAX_HEAP_READS_PER_WINDOW`], [`MAX_HEAP_BYTES_PER_WINDOW`]) were
    /// reached (the window reuses the process's previous snapshot).
    pub heap_reads_skipped: u64,
}

/// Previous cumulative counts, to cut windows.
#[derive(Default)]
pub(super) struct Prev {
    calls: HashMap<GoStackKey, u64>,
    call_sites: HashMap<GoStackKey, u64>,
    allocs: HashMap<GoStackKey, u64>,
    sites: HashMap<GoStackKey, SiteCounts>,
    /// Latency histogram cells: (calls, summed ns).
    lat: HashMap<GoStackKey, (u64, u64)>,
    /// Lock waits: (waits, summed ns).
    contention: HashMap<GoStackKey, (u64, u64)>,
}

/// The window's part of cumulative (count, nanoseconds) cells: the
/// difference from `prev` (which becomes `now`), cells that did not grow
/// left out.
fn delta_pairs(
    now: Vec<(GoStackKey, u64, u64)>,
    prev: &mut HashMap<GoStackKey, (u64, u64)>,
) -> Vec<(GoStackKey, u64, u64)> {
    let mut out = Vec::new();
    let mut next = HashMap::with_capacity(now.len());
    for (k, n, ns) in now {
        let (pn, pns) = prev.get(&k).copied().unwrap_or((0, 0));
        let (dn, dns) = (n.saturating_sub(pn), ns.saturating_sub(pns));
        if dn > 0 || dns > 0 {
            out.push((k, dn, dns));
        }
        next.insert(k, (n, ns));
    }
    *prev = next;
    out
}

/// Go processes whose heap buckets are read per window at most (the
/// others keep their previous snapshot and are counted in
/// [`SharedStats::heap_reads_skipped`]; the least read go first).
pub const MAX_HEAP_READS_PER_WINDOW: usize = 64;
/// Bytes of heap buckets read per window at most (over all processes).
pub const MAX_HEAP_BYTES_PER_WINDOW: u64 = 256 << 20;

/// State of the agent mode.
#[derive(Default)]
pub(super) struct Shared {
    binaries: HashMap<BinKey, SharedBinary>,
    proc_bin: HashMap<u32, BinKey>,
    not_go: HashSet<BinKey>,
    /// Links attached by the current `add_process` (moved to its binary).
    pub(super) pending_links: Vec<(&'static str, UProbeLinkId)>,
    /// Segments of the binary the current `add_process` analysed.
    pub(super) last_segments: Vec<(u64, u64, u64, u64)>,
    stats: SharedStats,
    prev: Prev,
}

/// One window's Go profiles of one group of processes (a container).
pub struct GroupProfiles {
    /// (type, profile, total value) for each requested type; a type is
    /// missing when the group has no Go process.
    pub profiles: Vec<(&'static str, Profile, u64)>,
    /// Why the Go types are absent (no Go process), when they are.
    pub absent: Option<String>,
    /// Why a Go type of a group with Go processes is empty (no measurable
    /// function, heap buckets not found or not readable, ...).
    pub empty: Vec<String>,
}

fn key_of(tgid: u32) -> Option<BinKey> {
    // Follows the /proc/PID/exe link into the process's own mount
    // namespace (a container's filesystem) to the executable's inode.
    let m = std::fs::metadata(format!("/proc/{tgid}/exe")).ok()?;
    Some((m.dev(), m.ino()))
}

fn bias_of(pid: u32, segments: &[(u64, u64, u64, u64)]) -> u64 {
    super::attach::load_bias_with(pid, |off| {
        segments
            .iter()
            .find(|(_, _, o, fsz)| off >= *o && off < o + fsz)
            .map(|(a, _, o, _)| off - o + a)
    })
}

fn rebias(addr: Option<u64>, from: u64, to: u64) -> Option<u64> {
    addr.map(|a| a.wrapping_sub(from).wrapping_add(to))
}

impl GoSession {
    /// Switch to the agent's mode (before any process is added): probes
    /// per binary for all processes, filtered by `GO_PROCS` in the kernel.
    pub fn set_shared(&mut self) {
        self.shared = Some(Shared::default());
    }

    /// Counters of the per-binary probes (agent mode; zeros otherwise).
    pub fn shared_stats(&self) -> SharedStats {
        let mut s = self.shared.as_ref().map(|s| s.stats).unwrap_or_default();
        s.not_target_hits = self
            .counters()
            .iter()
            .find(|(c, _)| *c == GoCounter::NotTarget)
            .map(|(_, v)| *v)
            .unwrap_or(0);
        s
    }

    /// The kernel's Go counters (name, value) summed over CPUs.
    pub fn counter_values(&self) -> Vec<(&'static str, u64, bool)> {
        self.counters()
            .into_iter()
            .map(|(c, v)| (c.name(), v, c.is_loss()))
            .collect()
    }

    /// The contention probes' kernel counters (name, value, is a loss);
    /// empty without the contention type.
    pub fn lock_counter_values(&self) -> Vec<(&'static str, u64, bool)> {
        if !self.opts.profiles.contention {
            return Vec::new();
        }
        self.lock_counters()
            .into_iter()
            .map(|(c, v)| (c.name(), v, c.is_loss()))
            .collect()
    }

    /// Write 0 back into every target whose `runtime.MemProfileRate` we set
    /// (`--allocs-set-rate`): the agent's shutdown undoes what it changed.
    pub fn restore_alloc_rates(&self) {
        self.restore_rates();
    }

    /// Whether `tgid` has Go probes (agent mode).
    pub fn is_go_process(&self, tgid: u32) -> bool {
        self.procs.contains_key(&tgid)
    }

    /// Agent mode: add `tgid` (a process of a selected container). The
    /// first process of a binary analyses it and attaches the probes for
    /// every process running it; later ones only enter `GO_PROCS`.
    pub(super) fn add_shared(
        &mut self,
        sampler: &mut Sampler,
        tgid: u32,
    ) -> Result<(), RecordError> {
        let Some(key) = key_of(tgid) else {
            return Ok(());
        };
        let sh = self.shared.as_mut().expect("agent mode");
        if sh.not_go.contains(&key) {
            return Ok(());
        }
        if self.procs.len() >= GO_PROC_ENTRIES as usize {
            sh.stats.processes_overflow += 1;
            return Ok(());
        }
        if let Some(b) = sh.binaries.get_mut(&key) {
            let bias = bias_of(tgid, &b.segments);
            let first_bias = bias_of_template(&b.template);
            let t = &b.template;
            let proc = Proc {
                exe: std::path::PathBuf::from(format!("/proc/{tgid}/exe")),
                version: t.version.clone(),
                offsets: t.offsets,
                mem_rate_addr: rebias(t.mem_rate_addr, first_bias, bias),
                disable_addr: rebias(t.disable_addr, first_bias, bias),
                allgs_addr: rebias(t.allgs_addr, first_bias, bias),
                held: false,
                heap: t.heap.map(|h| h.biased(bias.wrapping_sub(first_bias))),
                mem_rate: None,
                alloc_probe: t.alloc_probe,
                rate_written: false,
                bias,
            };
            self.procs_map
                .insert(
                    tgid,
                    GoProcConfig {
                        goid_offset: b.offsets.goid as u32,
                        _pad: 0,
                    },
                    0,
                )
                .map_err(|e| RecordError::ebpf("GO_PROCS", e))?;
            b.procs.insert(tgid);
            sh.proc_bin.insert(tgid, key);
            sh.stats.processes += 1;
            let mut proc = proc;
            proc.mem_rate = self.read_mem_rate(tgid, &proc);
            self.procs.insert(tgid, proc);
            self.enforce_rate(tgid);
            return Ok(());
        }
        if sh.binaries.len() >= MAX_BINARIES {
            sh.stats.binaries_overflow += 1;
            return Ok(());
        }
        if sh.stats.probes >= MAX_PROBES {
            sh.stats.probes_overflow += 1;
            return Ok(());
        }
        sh.pending_links.clear();
        let before = self.procs.len();
        let r = self.add_process_inner(sampler, tgid, None);
        let sh = self.shared.as_mut().expect("agent mode");
        let links = std::mem::take(&mut sh.pending_links);
        let added = self.procs.len() > before && self.procs.contains_key(&tgid);
        if r.is_err() || !added {
            // Not Go (or failed half way): nothing stays attached.
            if r.is_ok() {
                if sh.not_go.len() >= MAX_NOT_GO {
                    sh.not_go.clear();
                }
                sh.not_go.insert(key);
            }
            detach_links(sampler, links);
            let _ = self.procs_map.remove(&tgid);
            self.procs.remove(&tgid);
            return r;
        }
        let p = &self.procs[&tgid];
        let segments = std::mem::take(&mut sh.last_segments);
        let template = Proc {
            exe: p.exe.clone(),
            version: p.version.clone(),
            offsets: p.offsets,
            mem_rate_addr: p.mem_rate_addr,
            disable_addr: p.disable_addr,
            allgs_addr: p.allgs_addr,
            held: false,
            heap: p.heap,
            mem_rate: None,
            alloc_probe: p.alloc_probe,
            rate_written: false,
            bias: p.bias,
        };
        sh.stats.probes += links.len() as u64;
        sh.stats.binaries += 1;
        sh.stats.processes += 1;
        sh.proc_bin.insert(tgid, key);
        sh.binaries.insert(
            key,
            SharedBinary {
                links,
                procs: HashSet::from([tgid]),
                segments,
                offsets: template.offsets,
                template,
            },
        );
        Ok(())
    }

    /// Agent mode: forget processes that exited (after their last window
    /// was written): their `GO_PROCS` entries and map keys; detach a
    /// binary's probes when its last process is gone.
    pub fn forget_dead_shared(&mut self, sampler: &mut Sampler) {
        let dead: Vec<u32> = self
            .procs
            .keys()
            .copied()
            .filter(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
            .collect();
        if dead.is_empty() {
            return;
        }
        let dead_set: HashSet<u32> = dead.iter().copied().collect();
        for pid in &dead {
            self.procs.remove(pid);
            let _ = self.procs_map.remove(pid);
        }
        // Keys of the dead processes in every count map.
        let stale = |keys: Vec<GoStackKey>| -> Vec<GoStackKey> {
            keys.into_iter()
                .filter(|k| dead_set.contains(&k.tgid))
                .collect()
        };
        for k in stale(self.calls.keys().filter_map(Result::ok).collect()) {
            let _ = self.calls.remove(&k);
        }
        for k in stale(self.call_sites.keys().filter_map(Result::ok).collect()) {
            let _ = self.call_sites.remove(&k);
        }
        for k in stale(self.allocs.keys().filter_map(Result::ok).collect()) {
            let _ = self.allocs.remove(&k);
        }
        for k in stale(self.sites.keys().filter_map(Result::ok).collect()) {
            let _ = self.sites.remove(&k);
        }
        if let Some(h) = &mut self.lat_hist {
            let keys: Vec<GoStackKey> = h.keys().filter_map(Result::ok).collect();
            for k in stale(keys) {
                let _ = h.remove(&k);
            }
        }
        if let Some(m) = &mut self.lat_inflight {
            remove_keys(m, |k| dead_set.contains(&k.tgid));
        }
        for k in stale(self.contention.keys().filter_map(Result::ok).collect()) {
            let _ = self.contention.remove(&k);
        }
        if let Some(m) = &mut self.parked {
            remove_keys(m, |k| dead_set.contains(&k.tgid));
        }
        self.heap_state.retain(|pid, _| !dead_set.contains(pid));
        let gone: Vec<_> = self
            .goroutines
            .keys()
            .filter_map(Result::ok)
            .filter(|k| dead_set.contains(&k.tgid))
            .collect();
        for k in gone {
            let _ = self.goroutines.remove(&k);
        }
        let released = self.release_stacks();
        let Some(sh) = self.shared.as_mut() else {
            return;
        };
        sh.stats.stacks_released += released;
        let prev = &mut sh.prev;
        prev.calls.retain(|k, _| !dead_set.contains(&k.tgid));
        prev.call_sites.retain(|k, _| !dead_set.contains(&k.tgid));
        prev.allocs.retain(|k, _| !dead_set.contains(&k.tgid));
        prev.sites.retain(|k, _| !dead_set.contains(&k.tgid));
        prev.lat.retain(|k, _| !dead_set.contains(&k.tgid));
        prev.contention.retain(|k, _| !dead_set.contains(&k.tgid));
        let mut emptied = Vec::new();
        for pid in dead {
            if let Some(key) = sh.proc_bin.remove(&pid) {
                sh.stats.processes = sh.stats.processes.saturating_sub(1);
                if let Some(b) = sh.binaries.get_mut(&key) {
                    b.procs.remove(&pid);
                    if b.procs.is_empty() {
                        emptied.push(key);
                    }
                }
            }
        }
        for key in emptied {
            if let Some(b) = sh.binaries.remove(&key) {
                sh.stats.probes = sh.stats.probes.saturating_sub(b.links.len() as u64);
                sh.stats.binaries = sh.stats.binaries.saturating_sub(1);
                sh.stats.binaries_detached += 1;
                detach_links(sampler, b.links);
            }
        }
    }

    /// Agent mode: one window's Go profiles for each group of processes
    /// (`groups`: a name and its pids), with `meta(name)` as each
    /// profile's metadata. Counts are the window's (differences since the
    /// previous call); goroutines are the live ones at this instant.
    pub fn window(
        &mut self,
        symbolizer: &mut Symbolizer,
        groups: &[(String, HashSet<u32>)],
        meta: impl Fn(&str) -> ProfileMeta,
    ) -> Vec<(String, GroupProfiles)> {
        if self.opts.alloc_set_rate.is_some() {
            let pids: Vec<u32> = self.procs.keys().copied().collect();
            for pid in pids {
                self.enforce_rate(pid);
            }
        }
        for &pid in self.procs.keys() {
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = symbolizer.snapshot_process(pid);
            }
        }
        let Some(mut sh) = self.shared.take() else {
            return Vec::new();
        };
        // Window deltas of every cumulative map.
        let delta = |map: &aya::maps::PerCpuHashMap<aya::maps::MapData, GoStackKey, u64>,
                     prev: &mut HashMap<GoStackKey, u64>| {
            let mut out = Vec::new();
            let mut now = HashMap::new();
            for k in map.keys().filter_map(Result::ok) {
                if let Ok(v) = map.get(&k, 0) {
                    let n: u64 = v.iter().sum();
                    let d = n.saturating_sub(prev.get(&k).copied().unwrap_or(0));
                    now.insert(k, n);
                    if d > 0 {
                        out.push((k, d));
                    }
                }
            }
            *prev = now;
            out
        };
        let calls = delta(&self.calls, &mut sh.prev.calls);
        let exact = delta(&self.call_sites, &mut sh.prev.call_sites);
        let calls = spread_over_stacks(calls, exact);
        let allocs = delta(&self.allocs, &mut sh.prev.allocs);
        let mut sites_now = HashMap::new();
        let mut sites = Vec::new();
        for (k, c) in self.read_sites() {
            let p = sh.prev.sites.get(&k).copied().unwrap_or_default();
            sites.push((
                k,
                c.created.saturating_sub(c.exited),
                c.created.saturating_sub(p.created),
                c.exited.saturating_sub(p.exited),
            ));
            sites_now.insert(k, c);
        }
        sh.prev.sites = sites_now;
        let lat = if self.opts.profiles.latency {
            delta_pairs(self.latency_cells(), &mut sh.prev.lat)
        } else {
            Vec::new()
        };
        let waits = if self.opts.profiles.contention {
            delta_pairs(self.contention_cells(), &mut sh.prev.contention)
        } else {
            Vec::new()
        };
        // The latency and contention programs check GO_PROCS (the shared
        // attach sets COOKIE_FILTER_PROCS); a safety net: entries of
        // processes that are not targets are removed here (they are in no
        // container's profile) and counted. Expected to find none.
        let outsider = |tgid: u32| !self.procs.contains_key(&tgid);
        let mut removed = 0u64;
        if let Some(h) = &mut self.lat_hist {
            let keys: Vec<GoStackKey> = h
                .keys()
                .filter_map(Result::ok)
                .filter(|k| outsider(k.tgid))
                .collect();
            for k in keys {
                removed += u64::from(h.remove(&k).is_ok());
                sh.prev.lat.remove(&k);
            }
        }
        let keys: Vec<GoStackKey> = self
            .contention
            .keys()
            .filter_map(Result::ok)
            .filter(|k| outsider(k.tgid))
            .collect();
        for k in keys {
            removed += u64::from(self.contention.remove(&k).is_ok());
            sh.prev.contention.remove(&k);
        }
        sh.stats.outsider_keys_removed += removed;
        sh.stats.latency_cells = self
            .lat_hist
            .as_ref()
            .map_or(0, |h| h.keys().count() as u64);
        sh.stats.contention_cells = if self.opts.profiles.contention {
            self.contention.keys().count() as u64
        } else {
            0
        };
        let in_flight: Vec<u32> = self
            .lat_inflight
            .as_ref()
            .map(|m| m.keys().filter_map(Result::ok).map(|k| k.tgid).collect())
            .unwrap_or_default();
        sh.stats.stacks = self.fp_stacks.keys().count() as u64;
        self.shared = Some(sh);
        // Heap: each group's Go processes' buckets, once per window, within
        // the window's limits (the least read first).
        if self.opts.profiles.heap {
            let mut want: Vec<(u64, u32)> = groups
                .iter()
                .flat_map(|(_, pids)| pids.iter().copied())
                .filter(|p| self.procs.get(p).is_some_and(|p| p.heap.is_some()))
                .map(|p| (self.heap_state.get(&p).map_or(0, |st| st.reads), p))
                .collect();
            want.sort_unstable();
            want.dedup();
            let over = want.len().saturating_sub(MAX_HEAP_READS_PER_WINDOW) as u64;
            let pids: Vec<u32> = want
                .iter()
                .take(MAX_HEAP_READS_PER_WINDOW)
                .map(|w| w.1)
                .collect();
            let done = self.read_heaps_of(&pids, MAX_HEAP_BYTES_PER_WINDOW, false);
            if let Some(sh) = self.shared.as_mut() {
                sh.stats.heap_reads += done.reads;
                sh.stats.heap_bytes_read += done.bytes;
                sh.stats.heap_reads_skipped += over + done.skipped.len() as u64;
            }
        }
        // Rates as now (for the allocation weights).
        let pids: Vec<u32> = self.procs.keys().copied().collect();
        for pid in pids {
            let fresh = self.read_mem_rate(pid, &self.procs[&pid]);
            if let (Some(r), Some(p)) = (fresh, self.procs.get_mut(&pid)) {
                p.mem_rate = Some(r);
            }
        }
        let tracked = if self.opts.profiles.goroutines {
            self.tracked_goids()
        } else {
            HashSet::new()
        };
        // Notes are per window (bounded): the ones about a group's
        // processes go into its profiles, the rest are dropped.
        let notes = std::mem::take(&mut self.notes);
        self.single_stepped.clear();
        let mut cache = HashMap::new();
        let mut out = Vec::new();
        for (name, pids) in groups {
            let go_pids: Vec<u32> = pids
                .iter()
                .copied()
                .filter(|p| self.procs.contains_key(p))
                .collect();
            if go_pids.is_empty() {
                let had = calls
                    .iter()
                    .chain(allocs.iter())
                    .any(|(k, _)| pids.contains(&k.tgid))
                    || lat
                        .iter()
                        .chain(waits.iter())
                        .any(|(k, ..)| pids.contains(&k.tgid));
                if !had {
                    out.push((
                        name.clone(),
                        GroupProfiles {
                            profiles: Vec::new(),
                            absent: Some(format!(
                                "no Go program (Go 1.18+ with .gopclntab) in this container: no {} profiles",
                                self.opts.profiles.names().join("/")
                            )),
                            empty: Vec::new(),
                        },
                    ));
                    continue;
                }
            }
            let m = meta(name);
            let mut comments = m.comments.clone();
            for n in notes.iter().filter(|n| {
                pids.iter()
                    .any(|p| n.contains(&format!("pid {p} ")) || n.contains(&format!("pid {p}:")))
            }) {
                comments.push(n.clone());
            }
            let counter_line = format!(
                "go probe counters (node, cumulative): {}",
                self.counters()
                    .iter()
                    .map(|(c, v)| format!("{}={v}", c.name()))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            comments.push(counter_line);
            let meta = ProfileMeta { comments, ..m };
            let mut profiles = Vec::new();
            if self.opts.profiles.calls {
                let mut raws = Vec::new();
                let mut total = 0;
                for (k, n) in calls.iter().filter(|(k, _)| pids.contains(&k.tgid)) {
                    total += n;
                    raws.push((self.frames(k, &mut cache), k.tgid, vec![*n as i64], vec![]));
                }
                let mut c = meta.comments.clone();
                c.push(format!(
                    "calls: counted functions: {}",
                    if self.symbols.is_empty() {
                        "none found".to_string()
                    } else {
                        self.symbols.join(", ")
                    }
                ));
                let shape =
                    ProfileShape::new(&[("calls", "count")], ("calls", "count"), 1, Some("calls"));
                let p = self.render(symbolizer, raws, &shape, &meta, c);
                profiles.push(("calls", p, total));
            }
            if self.opts.profiles.goroutines {
                let mut raws = Vec::new();
                let mut live_total = 0u64;
                for (k, live, created, exited) in
                    sites.iter().filter(|(k, ..)| pids.contains(&k.tgid))
                {
                    if *live == 0 && *created == 0 && *exited == 0 {
                        continue;
                    }
                    live_total += live;
                    let mut frames = self.frames(k, &mut cache);
                    if frames.len() > 1 {
                        frames.remove(0);
                    }
                    raws.push((
                        frames,
                        k.tgid,
                        vec![*live as i64, *created as i64, *exited as i64],
                        vec![],
                    ));
                }
                let mut c = meta.comments.clone();
                for &pid in &go_pids {
                    let p = &self.procs[&pid];
                    match self.walk_allgs(pid, p) {
                        Some(live) => {
                            let mut by_pc: HashMap<u64, i64> = HashMap::new();
                            for (goid, gopc) in live {
                                if !tracked.contains(&(pid, goid)) {
                                    *by_pc.entry(gopc).or_default() += 1;
                                }
                            }
                            for (pc, n) in by_pc {
                                live_total += n as u64;
                                raws.push((
                                    vec![pc.saturating_sub(1)],
                                    pid,
                                    vec![n, 0, 0],
                                    vec![("origin".into(), "before_attach".into())],
                                ));
                            }
                        }
                        None => c.push(format!(
                            "goroutines: pid {pid}: goroutines created before the probes were attached are NOT counted (runtime.allgs unknown or unreadable)"
                        )),
                    }
                }
                c.push(
                    "goroutines: goroutine/count is the snapshot of live goroutines at the window's end; created/exited count the window's creations and exits".into(),
                );
                let shape = ProfileShape::new(
                    &[
                        ("goroutine", "count"),
                        ("created", "count"),
                        ("exited", "count"),
                    ],
                    ("goroutine", "count"),
                    1,
                    Some("goroutine"),
                );
                let p = self.render(symbolizer, raws, &shape, &meta, c);
                profiles.push(("goroutines", p, live_total));
            }
            if self.opts.profiles.allocs {
                let mut raws = Vec::new();
                let mut events = 0u64;
                let mut c = meta.comments.clone();
                for &pid in &go_pids {
                    let p = &self.procs[&pid];
                    c.push(match (p.alloc_probe, p.mem_rate) {
                        (Some(_), Some(0)) => format!("allocs: pid {pid}: runtime.MemProfileRate is 0: Go samples no allocations (give the agent --allocs-set-rate 524288)"),
                        (Some(_), Some(r)) => format!("allocs: pid {pid}: runtime.MemProfileRate={r}: Go's own samples, weighted 1/(1-exp(-size/rate))"),
                        (Some(_), None) => format!("allocs: pid {pid}: runtime.MemProfileRate unknown: samples weighted at the default rate 524288"),
                        (None, _) => format!("allocs: pid {pid}: no allocation probe attached"),
                    });
                }
                for (k, n) in allocs.iter().filter(|(k, _)| pids.contains(&k.tgid)) {
                    events += n;
                    let size = k.tag as f64;
                    let rate = self
                        .procs
                        .get(&k.tgid)
                        .and_then(|p| p.mem_rate)
                        .filter(|r| *r > 0)
                        .unwrap_or(512 * 1024) as f64;
                    let scale = if size > 0.0 {
                        1.0 / (1.0 - (-size / rate).exp())
                    } else {
                        1.0
                    };
                    let objects = *n as f64 * scale;
                    raws.push((
                        self.frames(k, &mut cache),
                        k.tgid,
                        vec![objects.round() as i64, (objects * size).round() as i64],
                        vec![],
                    ));
                }
                let rate = go_pids
                    .iter()
                    .find_map(|p| self.procs[p].mem_rate)
                    .filter(|r| *r > 0)
                    .unwrap_or(0);
                let shape = ProfileShape::new(
                    &[("alloc_objects", "count"), ("alloc_space", "bytes")],
                    ("space", "bytes"),
                    rate,
                    Some("alloc_space"),
                );
                let p = self.render(symbolizer, raws, &shape, &meta, c);
                profiles.push(("allocs", p, events));
            }
            let mut empty = Vec::new();
            let window_secs = meta.duration.as_secs_f64();
            if self.opts.profiles.latency {
                let cells: Vec<_> = lat
                    .iter()
                    .filter(|(k, ..)| pids.contains(&k.tgid))
                    .copied()
                    .collect();
                let total = cells.iter().map(|c| c.1).sum();
                let flying = in_flight.iter().filter(|p| pids.contains(p)).count();
                let mut f = Finish {
                    meta: meta.clone(),
                    common_summary: Vec::new(),
                    elapsed: window_secs,
                    cache: std::mem::take(&mut cache),
                };
                let (_, p, _) = self.latency_profile_of(symbolizer, &mut f, cells, flying);
                cache = f.cache;
                if self.lat_symbols.is_empty() {
                    empty.push(format!(
                        "latency: no measurable function matches {} in this container's Go programs",
                        self.lat_patterns.join(", ")
                    ));
                }
                profiles.push(("latency", p, total));
            }
            if self.opts.profiles.contention {
                let cells: Vec<_> = waits
                    .iter()
                    .filter(|(k, ..)| pids.contains(&k.tgid))
                    .copied()
                    .collect();
                let total = cells.iter().map(|c| c.1).sum();
                let mut f = Finish {
                    meta: meta.clone(),
                    common_summary: Vec::new(),
                    elapsed: window_secs,
                    cache: std::mem::take(&mut cache),
                };
                let reconciles = if self.opts.profiles.latency {
                    let mine: Vec<_> = lat
                        .iter()
                        .filter(|(k, ..)| pids.contains(&k.tgid))
                        .copied()
                        .collect();
                    self.reconciles(&mine)
                } else {
                    None
                };
                let (_, p, _) = self.contention_profile_of(symbolizer, &mut f, cells, reconciles);
                cache = f.cache;
                profiles.push(("contention", p, total));
            }
            if self.opts.profiles.heap {
                let mut heap_pids = go_pids.clone();
                heap_pids.sort_unstable();
                let (p, lines, _) = self.heap_profile_of(symbolizer, &heap_pids, &meta, Vec::new());
                let records = p.sample.len() as u64;
                let before = empty.len();
                empty.extend(lines.into_iter().filter(|l| {
                    l.contains("not found")
                        || l.contains("could not be read")
                        || l.contains("MemProfileRate=0")
                }));
                let unread = heap_pids
                    .iter()
                    .all(|p| self.heap_state.get(p).is_none_or(|st| st.last.is_none()));
                if unread && empty.len() == before {
                    empty.push("heap: no Go process's heap buckets read yet".into());
                }
                profiles.push(("heap", p, records));
            }
            out.push((
                name.clone(),
                GroupProfiles {
                    profiles,
                    absent: None,
                    empty,
                },
            ));
        }
        out
    }
}

impl GoSession {
    /// Remove the stacks only exited processes used from `GO_FP_STACKS`
    /// (called after their keys were deleted), so a long-running agent
    /// does not fill the table with stacks of processes long gone. The
    /// table's keys are read first and only those are candidates: a stack
    /// stored meanwhile by a live process is kept. Returns how many were
    /// removed.
    fn release_stacks(&mut self) -> u64 {
        let before: Vec<u64> = self.fp_stacks.keys().filter_map(Result::ok).collect();
        if before.is_empty() {
            return 0;
        }
        let mut used: HashSet<u64> = HashSet::new();
        for k in self.calls.keys().filter_map(Result::ok) {
            used.insert(k.stack_hash);
        }
        for k in self.allocs.keys().filter_map(Result::ok) {
            used.insert(k.stack_hash);
        }
        for k in self.sites.keys().filter_map(Result::ok) {
            used.insert(k.stack_hash);
        }
        for k in self.goroutines.keys().filter_map(Result::ok) {
            if let Ok(site) = self.goroutines.get(&k, 0) {
                used.insert(site.stack_hash);
            }
        }
        if let Some(h) = &self.lat_hist {
            used.extend(h.keys().filter_map(Result::ok).map(|k| k.stack_hash));
        }
        if let Some(m) = &self.lat_inflight {
            for k in m.keys().filter_map(Result::ok) {
                if let Ok(v) = m.get(&k, 0) {
                    used.insert(v.stack_hash);
                }
            }
        }
        used.extend(
            self.contention
                .keys()
                .filter_map(Result::ok)
                .map(|k| k.stack_hash),
        );
        if let Some(m) = &self.parked {
            for k in m.keys().filter_map(Result::ok) {
                if let Ok(v) = m.get(&k, 0) {
                    used.insert(v.stack_hash);
                }
            }
        }
        let mut n = 0;
        for h in before {
            if !used.contains(&h) && self.fp_stacks.remove(&h).is_ok() {
                n += 1;
            }
        }
        n
    }
}

/// Remove the keys of `map` that `dead` picks (the keys are read first).
fn remove_keys<K: aya::Pod, V: aya::Pod>(
    map: &mut aya::maps::HashMap<aya::maps::MapData, K, V>,
    dead: impl Fn(&K) -> bool,
) {
    let keys: Vec<K> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| dead(k))
        .collect();
    for k in keys {
        let _ = map.remove(&k);
    }
}

fn bias_of_template(p: &Proc) -> u64 {
    p.bias
}

fn detach_links(sampler: &mut Sampler, links: Vec<(&'static str, UProbeLinkId)>) {
    for (prog, link) in links {
        let p: Option<&mut UProbe> = sampler
            .ebpf_mut()
            .program_mut(prog)
            .and_then(|p| p.try_into().ok());
        if let Some(p) = p {
            let _ = p.detach(link);
        }
    }
}
