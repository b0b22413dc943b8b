//! Quantiles of call latency, for `kind = "quantile"` budget rules.
//!
//! A latency profile (`profiler record --profile latency`) holds, per
//! stack and histogram bucket, one sample with the values `calls/count`
//! and `latency/nanoseconds` and the label `latency_bucket_ns` (the
//! bucket's lower bound; 16 linear buckets per power of two, so a bucket
//! `[lo, hi)` is at most `lo / 16` wide). The measured function is the
//! sample's leaf frame. Histograms are pooled over every run of a side;
//! quantiles are taken by nearest rank at the bucket's midpoint.
//!
//! The rule compares pooled quantiles directly (no significance test: a
//! latency quantile of thousands of calls is stable, and the bucket width
//! bounds the resolution at 6.25%): the candidate's quantile must stay
//! under `max`, and may not exceed the baseline's by more than
//! `max_growth_percent`. Fewer than `min_calls` calls on a side make the
//! finding inconclusive.

use std::collections::BTreeMap;

use regex::Regex;

use crate::{normalize::Normalizer, LabelValue, Profile};

/// Label naming a latency sample's bucket (its lower bound in ns).
pub const BUCKET_LABEL: &str = "latency_bucket_ns";

/// Linear buckets per power of two in the producer's histogram.
pub const SUB_BUCKETS: u64 = 16;

/// Calls per bucket lower bound (ns).
pub type Histogram = BTreeMap<u64, u64>;

/// Upper bound (exclusive) of the bucket whose lower bound is `lo`.
pub fn bucket_upper(lo: u64) -> u64 {
    if lo < SUB_BUCKETS {
        return lo + 1;
    }
    let msb = 63 - lo.leading_zeros() as u64;
    lo.saturating_add(1u64 << (msb - 4))
}

/// The `q` quantile (0 < q <= 1) of `h`, nearest rank, at the bucket's
/// midpoint; `None` for an empty histogram.
pub fn quantile(h: &Histogram, q: f64) -> Option<f64> {
    let n: u64 = h.values().sum();
    if n == 0 {
        return None;
    }
    let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
    let mut seen = 0;
    for (&lo, &c) in h {
        seen += c;
        if seen >= rank {
            return Some((lo as f64 + bucket_upper(lo) as f64) / 2.0);
        }
    }
    None
}

/// Latency histograms by measured (leaf) function, normalized with
/// `norm`, pooled over `profiles`, for functions matching `function`.
/// Profiles without the `calls` sample type and bucket labels add nothing.
pub fn histograms(
    profiles: &[&Profile],
    norm: &Normalizer,
    function: &Regex,
) -> BTreeMap<String, Histogram> {
    let mut out: BTreeMap<String, Histogram> = BTreeMap::new();
    for p in profiles {
        let Some(calls) = p.sample_type_index("calls") else {
            continue;
        };
        if p.sample_type_index("latency").is_none() {
            continue;
        }
        let mut names: Vec<Option<String>> = vec![None; p.frames.len()];
        for s in &p.samples {
            let Some(lo) = s.labels.iter().find_map(|(k, v)| match (k.as_str(), v) {
                (BUCKET_LABEL, LabelValue::Str(t)) => t.parse::<u64>().ok(),
                (BUCKET_LABEL, LabelValue::Num(n, _)) => u64::try_from(*n).ok(),
                _ => None,
            }) else {
                continue;
            };
            let Some(&leaf) = s.stack.first() else {
                continue;
            };
            let name = names[leaf as usize]
                .get_or_insert_with(|| norm.function_name(&p.frames[leaf as usize]))
                .clone();
            if !function.is_match(&name) {
                continue;
            }
            let n = s.values.get(calls).copied().unwrap_or(0).max(0) as u64;
            *out.entry(name).or_default().entry(lo).or_default() += n;
        }
    }
    out
}

/// Parse a quantile: `0.99`, `"p99"`, `"p99.9"`, `"99%"`.
pub fn parse_quantile(v: &toml::Value) -> Option<f64> {
    let q = match v {
        toml::Value::Float(f) => *f,
        toml::Value::Integer(i) => *i as f64 / 100.0,
        toml::Value::String(s) => {
            let s = s.trim();
            if let Some(p) = s.strip_prefix('p') {
                p.parse::<f64>().ok()? / 100.0
            } else if let Some(p) = s.strip_suffix('%') {
                p.trim().parse::<f64>().ok()? / 100.0
            } else {
                s.parse().ok()?
            }
        }
        _ => return None,
    };
    (q > 0.0 && q <= 1.0).then_some(q)
}

/// `p99` for 0.99, `p99.9` for 0.999.
pub fn quantile_name(q: f64) -> String {
    let p = q * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("p{}", p.round())
    } else {
        format!("p{}", (p * 1000.0).round() / 1000.0)
    }
}

/// Nanoseconds as text (`850ns`, `2.16ms`, `1.20s`).
pub fn fmt_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2}s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2}ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2}µs", ns / 1e3)
    } else {
        format!("{ns:.0}ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_quantiles() {
        assert_eq!(bucket_upper(5), 6);
        assert_eq!(bucket_upper(16), 17);
        assert_eq!(bucket_upper(2_097_152), 2_097_152 + 131_072);
        let mut h = Histogram::new();
        h.insert(2_097_152, 70);
        h.insert(5_767_168, 25);
        h.insert(19_922_944, 5);
        let mid = |lo: u64| (lo + bucket_upper(lo)) as f64 / 2.0;
        assert_eq!(quantile(&h, 0.5), Some(mid(2_097_152)));
        assert_eq!(quantile(&h, 0.9), Some(mid(5_767_168)));
        assert_eq!(quantile(&h, 0.99), Some(mid(19_922_944)));
        assert_eq!(quantile(&h, 0.95), Some(mid(5_767_168)));
        assert_eq!(quantile(&Histogram::new(), 0.5), None);
    }

    #[test]
    fn quantile_spellings() {
        let s = |t: &str| parse_quantile(&toml::Value::String(t.into()));
        assert_eq!(s("p99"), Some(0.99));
        assert_eq!(s("99%"), Some(0.99));
        assert_eq!(s("p99.9").map(|q| (q * 1000.0).round()), Some(999.0));
        assert_eq!(parse_quantile(&toml::Value::Float(0.5)), Some(0.5));
        assert_eq!(parse_quantile(&toml::Value::Integer(90)), Some(0.9));
        assert_eq!(s("p0"), None);
        assert_eq!(s("fast"), None);
        assert_eq!(quantile_name(0.99), "p99");
        assert_eq!(quantile_name(0.999), "p99.9");
    }
}
