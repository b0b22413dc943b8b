//! The `goroutines` profile: live goroutines by creation stack, created
//! and exited counts per site, goroutines from before attaching (from
//! `runtime.allgs`), and a leak signal per site from a live-count series.

use std::{
    collections::{HashMap, HashSet},
    time::Instant,
};

use diff::pprof::proto::Profile;
use profiler_common::go::{GoStackKey, SiteCounts};
use profiler_symbolize::{ProfileShape, RawSample, Symbolizer};

use super::{
    attach::ProbeTarget, profile, prologue, session::Finish, GoSession, StackCache,
    MAX_SERIES_POINTS, MAX_SERIES_SITES,
};
use crate::{error::RecordError, sampler::Sampler};

fn sum_sites(v: &aya::maps::PerCpuValues<SiteCounts>) -> SiteCounts {
    let mut s = SiteCounts::default();
    for c in v.iter() {
        s.created += c.created;
        s.exited += c.exited;
    }
    s
}

impl GoSession {
    /// Attach the goroutines probes to one process.
    pub(super) fn attach_goroutines(
        &mut self,
        sampler: &mut Sampler,
        t: &ProbeTarget<'_>,
    ) -> Result<(), RecordError> {
        let (bin, exe, tgid, shown, version) = (t.bin, t.exe, t.tgid, t.shown, t.version);
        let newproc = self.probe(sampler, bin, exe, tgid, "go_newproc", "runtime.newproc", 0)?;
        let done = match (
            bin.func("runtime.newproc.func1"),
            bin.func("runtime.newproc1"),
        ) {
            (Some(f1), Some(np1)) => bin
                .code(f1)
                .and_then(|c| prologue::after_call_probe(c, f1.entry, np1.entry))
                .and_then(|(pp, r)| Some((bin.file_offset(pp.vaddr)?, r, pp.emulated))),
            _ => None,
        };
        let exit = bin.func("runtime.goexit1").is_some();
        match (newproc, done) {
            (true, Some((off, r, emulated))) if exit => {
                if !emulated {
                    self.single_stepped.push("runtime.newproc.func1 (after newproc1)".into());
                }
                self.attach(sampler, "go_newproc_done", exe, off, tgid, r)?;
                self.probe(sampler, bin, exe, tgid, "go_exit", "runtime.goexit1", 0)?;
            }
            _ => self.notes.push(format!(
                "goroutines: pid {tgid} ({shown}, {version}): runtime.newproc/newproc.func1/goexit1 not found or not decodable: goroutines not tracked"
            )),
        }
        Ok(())
    }

    /// Collect: one point of each creation site's live-count series (for
    /// the leak slope). Bounded by the site map and [`MAX_SERIES_SITES`].
    pub(super) fn collect_series(&mut self, now: Instant) {
        let t = now.duration_since(self.started).as_secs_f64();
        for (k, c) in self.read_sites() {
            let live = c.created.saturating_sub(c.exited) as f64;
            let len = self.series.len();
            let entry = match self.series.get_mut(&k) {
                Some(e) => e,
                None if len < MAX_SERIES_SITES => self.series.entry(k).or_default(),
                None => {
                    self.series_overflow += 1;
                    continue;
                }
            };
            if entry.len() >= MAX_SERIES_POINTS {
                let kept: Vec<(f64, f64)> = entry.iter().copied().step_by(2).collect();
                *entry = kept;
            }
            entry.push((t, live));
        }
    }

    pub(super) fn read_sites(&self) -> Vec<(GoStackKey, SiteCounts)> {
        let keys: Vec<GoStackKey> = self.sites.keys().filter_map(Result::ok).collect();
        keys.into_iter()
            .filter_map(|k| self.sites.get(&k, 0).ok().map(|v| (k, sum_sites(&v))))
            .collect()
    }

    /// Build the goroutines profile and its summary lines.
    pub(super) fn goroutines_profile(
        &self,
        symbolizer: &mut Symbolizer,
        f: &mut Finish,
    ) -> (String, Profile, Vec<String>) {
        let sites = self.read_sites();
        let mut raws = Vec::new();
        let mut comments = f.meta.comments.clone();
        let mut summary = f.common_summary.clone();
        for (k, c) in &sites {
            let live = c.created.saturating_sub(c.exited) as i64;
            let mut frames = self.frames(k, &mut f.cache);
            // Drop the runtime.newproc leaf: the creating function leads.
            if frames.len() > 1 {
                frames.remove(0);
            }
            raws.push((
                frames,
                k.tgid,
                vec![live, c.created as i64, c.exited as i64],
                vec![],
            ));
        }
        // Goroutines that predate the probes: from runtime.allgs.
        let mut tracked: HashSet<(u32, u64)> = HashSet::new();
        let mut before_total = 0i64;
        let mut walked_any = false;
        for (&pid, p) in &self.procs {
            match self.walk_allgs(pid, p) {
                    Some(live) => {
                        walked_any = true;
                        if tracked.is_empty() {
                            tracked = self.tracked_goids();
                        }
                        let mut by_pc: HashMap<u64, i64> = HashMap::new();
                        for (goid, gopc) in live {
                            if !tracked.contains(&(pid, goid)) {
                                *by_pc.entry(gopc).or_default() += 1;
                            }
                        }
                        for (pc, n) in by_pc {
                            before_total += n;
                            // gopc is a return address: keep it a caller frame.
                            raws.push((vec![pc.saturating_sub(1)], pid, vec![n, 0, 0], vec![("origin".to_string(), "before_attach".to_string())]));
                        }
                    }
                    None => comments.push(format!(
                        "goroutines: pid {pid}: goroutines created before the probes were attached are NOT counted ({})",
                        if p.allgs_addr.is_none() { "runtime.allgs unknown: binary has no .symtab" } else { "process gone or /proc/PID/mem unreadable at the end" }
                    )),
                }
        }
        if walked_any {
            comments.push(format!(
                    "goroutines: {before_total} live goroutines created before attaching, counted from runtime.allgs by creation PC (label origin=before_attach)"
                ));
        }
        // Leak signal per site.
        let mut leak_lines = Vec::new();
        for (k, c) in &sites {
            let live = c.created.saturating_sub(c.exited) as i64;
            let (slope, r2) = self
                .series
                .get(k)
                .and_then(|pts| profile::slope(pts))
                .unwrap_or((0.0, 0.0));
            leak_lines.push((slope, r2, live, *c, *k));
        }
        leak_lines.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
        let names = self.site_names(
            symbolizer,
            leak_lines.iter().map(|l| l.4).collect(),
            &mut f.cache,
        );
        for ((slope, r2, live, c, _), name) in leak_lines.iter().zip(names).take(20) {
            let leaking = *slope > 0.0 && *r2 >= 0.8 && slope * f.elapsed >= 5.0;
            let line = format!(
                    "goroutines: site {name}: live={live} created={} exited={} slope={slope:+.2}/s r2={r2:.2}{}",
                    c.created,
                    c.exited,
                    if leaking { " LEAK SIGNAL" } else { "" }
                );
            comments.push(line.clone());
            summary.push(line);
        }
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
        let p = self.render(symbolizer, raws, &shape, &f.meta, comments);
        ("goroutines".to_string(), p, summary)
    }

    /// Goids of goroutines created while attached and still live.
    pub(super) fn tracked_goids(&self) -> HashSet<(u32, u64)> {
        self.goroutines
            .keys()
            .filter_map(Result::ok)
            .map(|k| (k.tgid, k.goid))
            .collect()
    }

    fn site_names(
        &self,
        symbolizer: &mut Symbolizer,
        keys: Vec<GoStackKey>,
        cache: &mut StackCache,
    ) -> Vec<String> {
        let raws: Vec<RawSample> = keys
            .iter()
            .map(|k| {
                let mut f = self.frames(k, cache);
                if f.len() > 1 {
                    f.remove(0);
                }
                f.truncate(1);
                RawSample {
                    tgid: k.tgid,
                    tid: k.tgid,
                    comm: String::new(),
                    user: f,
                    kernel: vec![],
                    count: 1,
                }
            })
            .collect();
        let (_, resolved) = symbolizer.resolve_samples(&raws);
        resolved
            .iter()
            .map(|r| {
                r.frames
                    .first()
                    .and_then(|f| {
                        f.lines.last().map(|l| {
                            format!(
                                "{} ({}:{})",
                                l.function,
                                l.file.rsplit('/').next().unwrap_or(""),
                                l.line
                            )
                        })
                    })
                    .unwrap_or_else(|| "?".to_string())
            })
            .collect()
    }
}
