//! The `calls` profile: exact counts of calls to the `--count` symbols,
//! by stack (full mode) or by immediate caller with sampled stacks above
//! it (caller mode).

use std::collections::HashMap;

use diff::pprof::proto::Profile;
use profiler_common::go::{
    GoStackKey, CALLER_MODE_FIRST_STACKS, CALLER_MODE_STACK_EVERY, COOKIE_CALLER_MODE,
};
use profiler_symbolize::{ProfileShape, Symbolizer};

use super::{attach::ProbeTarget, session::Finish, CountStacks, GoSession};
use crate::{error::RecordError, sampler::Sampler};

/// Counted-call totals by stack. `stacks` are the stack-map counts (every
/// call in full mode; sampled calls in caller mode); `exact` the caller-mode
/// counts per (tgid, caller, tag) (key `stack_id` 0). Each exact count is
/// spread over the stacks sampled for its caller in proportion to their
/// samples (largest remainder, so the per-caller sums stay exact); stacks
/// of callers without an exact count are kept as they are; an exact count
/// without a sampled stack is kept with the caller frame only.
pub(super) fn spread_over_stacks(
    stacks: Vec<(GoStackKey, u64)>,
    exact: Vec<(GoStackKey, u64)>,
) -> Vec<(GoStackKey, u64)> {
    let site = |k: &GoStackKey| (k.tgid, k.caller, k.tag);
    let exact: HashMap<(u32, u64, u64), u64> = exact.iter().map(|(k, n)| (site(k), *n)).collect();
    let mut groups: HashMap<(u32, u64, u64), Vec<(GoStackKey, u64)>> = HashMap::new();
    let mut out = Vec::new();
    for (k, n) in stacks {
        if exact.contains_key(&site(&k)) {
            groups.entry(site(&k)).or_default().push((k, n));
        } else {
            out.push((k, n));
        }
    }
    for (s, total) in exact {
        let Some(mut g) = groups.remove(&s) else {
            let key = GoStackKey {
                tgid: s.0,
                stack_id: -1,
                stack_hash: 0,
                caller: s.1,
                tag: s.2,
            };
            out.push((key, total));
            continue;
        };
        g.sort_by_key(|(k, _)| (k.stack_id, k.stack_hash));
        let sampled: u64 = g.iter().map(|(_, n)| n).sum::<u64>().max(1);
        let mut shares: Vec<(u64, u128, usize)> = g
            .iter()
            .enumerate()
            .map(|(i, (_, n))| {
                let x = u128::from(total) * u128::from(*n);
                ((x / u128::from(sampled)) as u64, x % u128::from(sampled), i)
            })
            .collect();
        let mut left = total - shares.iter().map(|s| s.0).sum::<u64>();
        shares.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
        for sh in shares.iter_mut() {
            if left == 0 {
                break;
            }
            sh.0 += 1;
            left -= 1;
        }
        for (n, _, i) in shares {
            if n > 0 {
                out.push((g[i].0, n));
            }
        }
    }
    out
}

impl GoSession {
    /// Attach the calls probes to one process.
    pub(super) fn attach_calls(
        &mut self,
        sampler: &mut Sampler,
        t: &ProbeTarget<'_>,
    ) -> Result<(), RecordError> {
        let (bin, exe, tgid, shown) = (t.bin, t.exe, t.tgid, t.shown);
        let patterns = self.patterns.clone();
        for pat in &patterns {
            let found: Vec<String> = bin.matching(pat).iter().map(|f| f.name.clone()).collect();
            if found.is_empty() {
                self.notes.push(format!(
                    "calls: pid {tgid} ({shown}): no function matches {pat:?}{}",
                    if bin.has_symtab {
                        ""
                    } else {
                        " (searched .gopclntab: binary is stripped)"
                    }
                ));
            }
            for name in found.into_iter().take(256) {
                let next = self.symbols.len() as u64;
                let idx = *self.symbol_index.entry(name.clone()).or_insert(next);
                if idx == next {
                    self.symbols.push(name.clone());
                }
                let mode = match self.count_stacks {
                    CountStacks::Full => 0,
                    CountStacks::Caller => COOKIE_CALLER_MODE,
                };
                let cookie = idx | mode | self.bench_bits;
                self.probe(sampler, bin, exe, tgid, "go_call", &name, cookie)?;
            }
        }
        Ok(())
    }

    /// Build the calls profile and its summary lines.
    pub(super) fn calls_profile(
        &self,
        symbolizer: &mut Symbolizer,
        f: &mut Finish,
    ) -> (String, Profile, Vec<String>) {
        let mut stacks: Vec<(GoStackKey, u64)> = Vec::new();
        for k in self.calls.keys().filter_map(Result::ok) {
            if let Ok(v) = self.calls.get(&k, 0) {
                stacks.push((k, v.iter().sum()));
            }
        }
        let mut exact: Vec<(GoStackKey, u64)> = Vec::new();
        for k in self.call_sites.keys().filter_map(Result::ok) {
            if let Ok(v) = self.call_sites.get(&k, 0) {
                exact.push((k, v.iter().sum()));
            }
        }
        let sampled_sites = exact.len();
        let counted = spread_over_stacks(stacks, exact);
        let mut raws = Vec::new();
        let mut per_symbol: HashMap<u64, u64> = HashMap::new();
        for (k, n) in counted {
            *per_symbol.entry(k.tag).or_default() += n;
            raws.push((
                self.frames(&k, &mut f.cache),
                k.tgid,
                vec![n as i64],
                vec![],
            ));
        }
        let mut summary = f.common_summary.clone();
        let mut comments = f.meta.comments.clone();
        for (i, s) in self.symbols.iter().enumerate() {
            let n = per_symbol.get(&(i as u64)).copied().unwrap_or(0);
            let line = format!("calls: {s}: {n} ({:.1}/s)", n as f64 / f.elapsed.max(1e-9));
            comments.push(line.clone());
            summary.push(line);
        }
        if self.symbols.is_empty() {
            let line = format!(
                "calls: no counted function found (patterns: {})",
                if self.patterns.is_empty() {
                    "none".to_string()
                } else {
                    self.patterns.join(", ")
                }
            );
            comments.push(line.clone());
            summary.push(line);
        }
        if sampled_sites > 0 {
            let line = format!(
                    "calls: --count-stacks caller: counts exact per (function, immediate caller) at {sampled_sites} call sites; stacks above the caller sampled (first {CALLER_MODE_FIRST_STACKS} calls per caller and CPU, then 1 in {CALLER_MODE_STACK_EVERY}) and each caller's count spread over them"
                );
            comments.push(line.clone());
            summary.push(line);
        }
        summary.extend(
            self.notes
                .iter()
                .filter(|n| n.starts_with("calls:"))
                .cloned(),
        );
        let shape = ProfileShape::new(&[("calls", "count")], ("calls", "count"), 1, Some("calls"));
        let p = self.render(symbolizer, raws, &shape, &f.meta, comments);
        ("calls".to_string(), p, summary)
    }
}
