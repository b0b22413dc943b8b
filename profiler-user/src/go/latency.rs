//! The `latency` profile: call durations of the `--latency` functions.
//!
//! Each function gets an entry probe (placed like a counted call's, on the
//! stack-check `JBE`, skipping hits that go to `morestack`) and a probe on
//! every `RET` its code holds (decoded with iced-x86). The programs pair an
//! entry with the next `RET` of the same goroutine (the `g` pointer in R14)
//! and function, and add the call to a histogram cell (stack, function,
//! bucket). Uretprobes are never used: they replace the return address on
//! the goroutine stack, which Go's stack copying and unwinding do not
//! expect. A function that leaves through a tail call (a `JMP` out of it),
//! or has no `RET`, is reported as not measurable and not probed.
//!
//! Buckets ([`profiler_common::go::lat_bucket`]): 16 linear steps per
//! power of two (each at most 6.25% of its lower bound wide); quantiles
//! are reported at the bucket's midpoint, so within ±3.2% of the true
//! value.

use std::collections::{BTreeMap, HashMap, HashSet};

use diff::pprof::proto::Profile;
use profiler_common::go::{lat_bucket_bounds, COOKIE_CHECK_FLAGS, LAT_BUCKET_SHIFT};
use profiler_symbolize::{ProfileShape, Symbolizer};

use super::{attach::ProbeTarget, prologue, session::Finish, GoSession};
use crate::{error::RecordError, sampler::Sampler};

/// Label of a latency sample: its bucket's lower bound in ns.
pub const BUCKET_LABEL: &str = "latency_bucket_ns";

/// Quantiles of one function's calls, from its histogram.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LatencySummary {
    /// Calls.
    pub n: u64,
    /// Summed duration, ns.
    pub total_ns: u64,
    /// Median, ns (bucket midpoint).
    pub p50: u64,
    /// 90th percentile, ns.
    pub p90: u64,
    /// 99th percentile, ns.
    pub p99: u64,
    /// Largest, ns (midpoint of the highest bucket).
    pub max: u64,
}

/// Quantiles of a histogram (bucket -> calls), nearest rank, each at its
/// bucket's midpoint.
pub fn summarize(hist: &BTreeMap<u64, (u64, u64)>) -> LatencySummary {
    let n: u64 = hist.values().map(|v| v.0).sum();
    let total_ns = hist.values().map(|v| v.1).sum();
    let mid = |b: u64| {
        let (lo, hi) = lat_bucket_bounds(b);
        lo + (hi - lo) / 2
    };
    let q = |q: f64| -> u64 {
        let rank = ((q * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, (c, _)) in hist {
            seen += c;
            if seen >= rank {
                return mid(*b);
            }
        }
        0
    };
    LatencySummary {
        n,
        total_ns,
        p50: q(0.50),
        p90: q(0.90),
        p99: q(0.99),
        max: hist.keys().next_back().map(|b| mid(*b)).unwrap_or(0),
    }
}

impl GoSession {
    /// Attach the latency probes to one process: per matching function an
    /// entry probe and one probe per `RET`.
    pub(super) fn attach_latency(
        &mut self,
        sampler: &mut Sampler,
        t: &ProbeTarget<'_>,
    ) -> Result<(), RecordError> {
        let (bin, exe, tgid, shown) = (t.bin, t.exe, t.tgid, t.shown);
        let patterns = self.lat_patterns.clone();
        // A function matched by two patterns is probed once: twice would
        // time each call twice (one entry overwritten, one RET unpaired).
        let mut done: HashSet<String> = HashSet::new();
        for pat in &patterns {
            let found: Vec<String> = bin.matching(pat).iter().map(|f| f.name.clone()).collect();
            if found.is_empty() {
                self.notes.push(format!(
                    "latency: pid {tgid} ({shown}): no function matches {pat:?}{}",
                    if bin.has_symtab {
                        ""
                    } else {
                        " (searched .gopclntab: binary is stripped)"
                    }
                ));
            }
            for name in found.into_iter().take(256) {
                if !done.insert(name.clone()) {
                    continue;
                }
                let Some(f) = bin.func(&name).cloned() else {
                    continue;
                };
                let Some(code) = bin.code(&f) else { continue };
                let exits = prologue::exits(code, f.entry);
                if exits.rets.is_empty() || !exits.tail_jumps.is_empty() {
                    let why = if let (true, Some(j)) =
                        (exits.rets.is_empty(), exits.tail_jumps.first())
                    {
                        format!("no RET instruction (it leaves through a tail call at {j:#x})")
                    } else if exits.rets.is_empty() {
                        "no RET instruction".to_string()
                    } else {
                        format!(
                            "a tail call (JMP out of the function at {:#x})",
                            exits.tail_jumps[0]
                        )
                    };
                    let line = format!("latency: {name}: not measurable: {why}; not probed");
                    if !self.notes.contains(&line) {
                        self.notes.push(line);
                    }
                    continue;
                }
                let next = self.lat_symbols.len() as u64;
                let idx = *self.lat_index.entry(name.clone()).or_insert(next);
                if idx == next {
                    self.lat_symbols.push(name.clone());
                }
                // RETs first: an entry without its RET probes would leave
                // calls in flight.
                let mut offs = Vec::new();
                for r in &exits.rets {
                    match bin.file_offset(*r) {
                        Some(o) => offs.push(o),
                        None => continue,
                    }
                }
                for off in offs {
                    self.attach(sampler, "go_lat_ret", exe, off, tgid, idx)?;
                }
                let pp = prologue::entry_probe(code, f.entry);
                let Some(off) = bin.file_offset(pp.vaddr) else {
                    continue;
                };
                let cookie = if pp.check_flags {
                    idx | COOKIE_CHECK_FLAGS
                } else {
                    idx
                };
                self.attach(sampler, "go_lat_entry", exe, off, tgid, cookie)?;
                let line = format!(
                    "latency: {name}: entry probe {} and {} RET probe(s) (single-stepped)",
                    if pp.emulated {
                        "emulated"
                    } else {
                        "single-stepped"
                    },
                    exits.rets.len()
                );
                if !self.notes.contains(&line) {
                    self.notes.push(line);
                }
            }
        }
        Ok(())
    }

    /// The histogram's cells as they are now: (key, calls, summed ns).
    pub(super) fn latency_cells(&self) -> Vec<(profiler_common::go::GoStackKey, u64, u64)> {
        let mut cells = Vec::new();
        if let Some(h) = &self.lat_hist {
            for k in h.keys().filter_map(Result::ok) {
                if let Ok(v) = h.get(&k, 0) {
                    let (n, ns) = v
                        .iter()
                        .fold((0u64, 0u64), |a, c| (a.0 + c.count, a.1 + c.total_ns));
                    cells.push((k, n, ns));
                }
            }
        }
        cells
    }

    /// Build the latency profile and its summary lines.
    pub(super) fn latency_profile(
        &self,
        symbolizer: &mut Symbolizer,
        f: &mut Finish,
    ) -> (String, Profile, Vec<String>) {
        let cells = self.latency_cells();
        let in_flight = self
            .lat_inflight
            .as_ref()
            .map(|m| m.keys().filter_map(Result::ok).count())
            .unwrap_or(0);
        self.latency_profile_of(symbolizer, f, cells, in_flight)
    }

    /// The latency profile of `cells` (key, calls, summed ns), with
    /// `in_flight` calls not yet returned.
    pub(super) fn latency_profile_of(
        &self,
        symbolizer: &mut Symbolizer,
        f: &mut Finish,
        cells: Vec<(profiler_common::go::GoStackKey, u64, u64)>,
        in_flight: usize,
    ) -> (String, Profile, Vec<String>) {
        let mut per_fn: HashMap<u64, BTreeMap<u64, (u64, u64)>> = HashMap::new();
        let mut raws = Vec::new();
        for (k, n, ns) in cells {
            let func = k.tag & 0xffff_ffff;
            let bucket = k.tag >> LAT_BUCKET_SHIFT;
            let e = per_fn.entry(func).or_default().entry(bucket).or_default();
            e.0 += n;
            e.1 += ns;
            let key = profiler_common::go::GoStackKey { tag: func, ..k };
            raws.push((
                self.frames(&key, &mut f.cache),
                k.tgid,
                vec![n as i64, ns as i64],
                vec![(
                    BUCKET_LABEL.to_string(),
                    lat_bucket_bounds(bucket).0.to_string(),
                )],
            ));
        }
        let mut summary = f.common_summary.clone();
        let mut comments = f.meta.comments.clone();
        for (i, s) in self.lat_symbols.iter().enumerate() {
            let sm = per_fn.get(&(i as u64)).map(summarize).unwrap_or_default();
            let line = format!(
                "latency: {s}: n={} p50_ns={} p90_ns={} p99_ns={} max_ns={} mean_ns={}",
                sm.n,
                sm.p50,
                sm.p90,
                sm.p99,
                sm.max,
                sm.total_ns.checked_div(sm.n).unwrap_or(0)
            );
            comments.push(line.clone());
            summary.push(line);
        }
        if self.lat_symbols.is_empty() {
            let line = format!(
                "latency: no measurable function found (patterns: {})",
                if self.lat_patterns.is_empty() {
                    "none".to_string()
                } else {
                    self.lat_patterns.join(", ")
                }
            );
            comments.push(line.clone());
            summary.push(line);
        }
        if in_flight > 0 {
            let line = format!(
                "latency: {in_flight} call(s) still in progress at the end (not in the histogram)"
            );
            comments.push(line.clone());
            summary.push(line);
        }
        comments.push(format!(
            "latency: samples per (stack, bucket); label {BUCKET_LABEL} = bucket lower bound in ns; 16 linear buckets per power of two; quantiles at bucket midpoints (within 3.2%)"
        ));
        summary.extend(
            self.notes
                .iter()
                .filter(|n| n.starts_with("latency:") && n.contains("not"))
                .cloned(),
        );
        for n in self.notes.iter().filter(|n| n.starts_with("latency:")) {
            if !comments.contains(n) {
                comments.push(n.clone());
            }
        }
        let shape = ProfileShape::new(
            &[("calls", "count"), ("latency", "nanoseconds")],
            ("calls", "count"),
            1,
            Some("latency"),
        );
        let p = self.render(symbolizer, raws, &shape, &f.meta, comments);
        ("latency".to_string(), p, summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use profiler_common::go::lat_bucket;

    #[test]
    fn quantiles_from_a_histogram_are_within_a_bucket() {
        let mut h: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        let mut all = Vec::new();
        for i in 0..1000u64 {
            let d = if i % 50 == 49 {
                20_000_000
            } else if i % 10 >= 7 {
                6_000_000
            } else {
                2_000_000
            };
            all.push(d);
            let e = h.entry(lat_bucket(d)).or_default();
            e.0 += 1;
            e.1 += d;
        }
        let s = summarize(&h);
        assert_eq!(s.n, 1000);
        assert_eq!(s.total_ns, all.iter().sum::<u64>());
        for (got, want) in [(s.p50, 2e6), (s.p90, 6e6), (s.p99, 2e7), (s.max, 2e7)] {
            assert!((got as f64 - want).abs() / want < 0.035, "{got} vs {want}");
        }
    }
}
