//! The `contention` profile: time goroutines wait on Go's semaphores (the
//! slow paths of `sync.Mutex`, `sync.RWMutex`, `sync.WaitGroup`), by the
//! waiter's stack, with sample types `contentions/count` and
//! `delay/nanoseconds` (the shape of Go's block profile, without the
//! program enabling it).
//!
//! Probes, each on a `CALL` found by decoding the machine code (the kernel
//! emulates a `CALL`; no uretprobes, they corrupt Go stacks): in
//! `runtime.semacquire1` on the call to `runtime.gopark` (the waiter parks:
//! time and stack) and in `runtime.semrelease1` on the call to
//! `runtime.readyWithTime` (the releaser makes the waiter runnable: the
//! wait ends, as in Go's block profile, and is counted), paired per
//! goroutine in the kernel (`profiler-ebpf/src/lock.rs`).

use diff::pprof::proto::Profile;
use profiler_common::lock::LockCounter;
use profiler_symbolize::{ProfileShape, Symbolizer};

use super::{attach::ProbeTarget, prologue, session::Finish, GoSession};
use crate::{error::RecordError, sampler::Sampler};

/// The file offset of the one direct `CALL` to `callee` in `func`.
fn call_site(bin: &super::binary::GoBinary, func: &str, callee: &str) -> Result<u64, String> {
    let f = bin.func(func).ok_or_else(|| format!("{func} not found"))?;
    let code = bin.code(f).ok_or_else(|| format!("{func} has no code"))?;
    let target = bin
        .func(callee)
        .ok_or_else(|| format!("{callee} not found"))?
        .entry;
    let sites = prologue::call_sites(code, f.entry, target);
    match sites.as_slice() {
        [at] => bin
            .file_offset(*at)
            .ok_or_else(|| format!("the call to {callee} is outside the file")),
        [] => Err(format!("no call to {callee} in {func}")),
        _ => Err(format!(
            "{} calls to {callee} in {func} (expected one)",
            sites.len()
        )),
    }
}

/// Where the contention probes go in one binary: the file offsets of the
/// park and ready instructions, or why they cannot be placed.
pub(super) fn probe_points(bin: &super::binary::GoBinary) -> Result<[u64; 2], String> {
    Ok([
        call_site(bin, "runtime.semacquire1", "runtime.gopark")?,
        call_site(bin, "runtime.semrelease1", "runtime.readyWithTime")?,
    ])
}

impl GoSession {
    /// Attach the contention probes to one process.
    pub(super) fn attach_contention(
        &mut self,
        sampler: &mut Sampler,
        t: &ProbeTarget<'_>,
    ) -> Result<(), RecordError> {
        match probe_points(t.bin) {
            Ok([park, ready]) => {
                // Ready first: a park seen before its ready probe exists
                // would leave an entry behind.
                self.attach(sampler, "go_park_ready", t.exe, ready, t.tgid, 0)?;
                self.attach(sampler, "go_park", t.exe, park, t.tgid, 0)?;
            }
            Err(why) => self.notes.push(format!(
                "contention: pid {} ({}, {}): {why}: lock waits not measured",
                t.tgid, t.shown, t.version
            )),
        }
        Ok(())
    }

    pub(super) fn lock_counters(&self) -> Vec<(LockCounter, u64)> {
        LockCounter::ALL
            .iter()
            .filter(|c| !c.is_offcpu() && **c != LockCounter::Waits)
            .map(|c| {
                let v = self
                    .lock_counters
                    .get(&(*c as u32), 0)
                    .map(|v| v.iter().sum())
                    .unwrap_or(0);
                (*c, v)
            })
            .collect()
    }

    /// The contention map as it is now: (waiter key, waits, summed ns).
    pub(super) fn contention_cells(&self) -> Vec<(profiler_common::go::GoStackKey, u64, u64)> {
        self.contention
            .keys()
            .filter_map(Result::ok)
            .filter_map(|k| {
                self.contention
                    .get(&k, 0)
                    .ok()
                    .map(|v| (k, v.count, v.nanos))
            })
            .collect()
    }

    /// Build the contention profile and its summary lines; `reconciles`
    /// (see [`GoSession::reconciles`]) adds the `reconciles/count` type.
    pub(super) fn contention_profile(
        &self,
        symbolizer: &mut Symbolizer,
        f: &mut Finish,
        reconciles: Option<u64>,
    ) -> (String, Profile, Vec<String>) {
        let cells = self.contention_cells();
        self.contention_profile_of(symbolizer, f, cells, reconciles)
    }

    /// Completed calls of the latency-timed functions named `*.Reconcile`
    /// among `latency` cells (key, calls, summed ns); `None` when no timed
    /// function has that name. The contention profile carries it as sample
    /// type `reconciles/count`, so a budget can bound lock wait per
    /// reconcile (`per = "reconciles"`).
    pub(super) fn reconciles(
        &self,
        latency: &[(profiler_common::go::GoStackKey, u64, u64)],
    ) -> Option<u64> {
        let tags: Vec<u64> = self
            .lat_symbols
            .iter()
            .enumerate()
            .filter(|(_, s)| s.ends_with(".Reconcile"))
            .map(|(i, _)| i as u64)
            .collect();
        if tags.is_empty() {
            return None;
        }
        Some(
            latency
                .iter()
                .filter(|(k, ..)| tags.contains(&(k.tag & 0xffff_ffff)))
                .map(|c| c.1)
                .sum(),
        )
    }

    /// The contention profile of `cells` (waiter key, waits, summed ns),
    /// with `reconciles` completed in the same time when known.
    pub(super) fn contention_profile_of(
        &self,
        symbolizer: &mut Symbolizer,
        f: &mut Finish,
        cells: Vec<(profiler_common::go::GoStackKey, u64, u64)>,
        reconciles: Option<u64>,
    ) -> (String, Profile, Vec<String>) {
        let mut raws = Vec::new();
        let (mut waits, mut nanos) = (0u64, 0u64);
        for (k, count, ns) in cells {
            let v = profiler_common::lock::WaitTotals { count, nanos: ns };
            waits += v.count;
            nanos += v.nanos;
            let mut values = vec![v.count as i64, v.nanos as i64];
            if reconciles.is_some() {
                values.push(0);
            }
            raws.push((self.frames(&k, &mut f.cache), k.tgid, values, vec![]));
        }
        if let Some(n) = reconciles {
            // The counter as one stackless sample: only its total matters
            // (budgets divide by it; `go tool pprof -sample_index=reconciles`
            // shows it).
            let pid = self.procs.keys().next().copied().unwrap_or(0);
            raws.push((Vec::new(), pid, vec![0, 0, n as i64], vec![]));
        }
        let counters = self.lock_counters();
        let counter_line = format!(
            "contention counters: {}",
            counters
                .iter()
                .map(|(c, v)| format!("{}={v}", c.name()))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let mut comments = f.meta.comments.clone();
        comments.push(counter_line.clone());
        let line = format!(
            "contention: {waits} waits on Go semaphores (sync.Mutex, RWMutex, WaitGroup), {:.3} s of delay in {:.1} s",
            nanos as f64 / 1e9,
            f.elapsed
        );
        comments.push(line.clone());
        let mut summary = f.common_summary.clone();
        summary.push(line);
        if let Some(n) = reconciles {
            let line = format!(
                "contention: {n} reconciles (completed calls of the timed *.Reconcile functions): {:.1} us of lock wait per reconcile (sample type reconciles/count)",
                nanos as f64 / 1e3 / n.max(1) as f64
            );
            comments.push(line.clone());
            summary.push(line);
        }
        if counters.iter().any(|(c, v)| c.is_loss() && *v > 0) {
            summary.push(format!("contention lost data: {counter_line}"));
        }
        summary.extend(
            self.notes
                .iter()
                .filter(|n| n.starts_with("contention:"))
                .cloned(),
        );
        let types: &[(&str, &str)] = if reconciles.is_some() {
            &[
                ("contentions", "count"),
                ("delay", "nanoseconds"),
                ("reconciles", "count"),
            ]
        } else {
            &[("contentions", "count"), ("delay", "nanoseconds")]
        };
        let shape = ProfileShape::new(types, ("contentions", "count"), 1, Some("delay"));
        let p = self.render(symbolizer, raws, &shape, &f.meta, comments);
        ("contention".to_string(), p, summary)
    }
}
