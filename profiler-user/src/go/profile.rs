//! What the profile types built from kernel maps share: [`symbolize_rows`]
//! (rows of raw user stacks and values to symbolized samples and their
//! mappings, the one path every such type takes before
//! `profiler_symbolize::build_profile`, the crate's one pprof builder) and
//! the leak signal of the goroutine profile.

use profiler_symbolize::{MappingDesc, ProfileSample, RawSample, Symbolizer};

/// One row of a profile built from a kernel map: user frames (leaf
/// first), process id, values (in the shape's order) and string labels.
pub(crate) type Row = (Vec<u64>, u32, Vec<i64>, Vec<(String, String)>);

/// Symbolize `rows` (their processes snapshotted beforehand) into samples,
/// in the same order, with the mappings they refer to.
pub(crate) fn symbolize_rows(
    symbolizer: &mut Symbolizer,
    rows: Vec<Row>,
) -> (Vec<MappingDesc>, Vec<ProfileSample>) {
    let raw: Vec<RawSample> = rows
        .iter()
        .map(|(frames, tgid, _, _)| RawSample {
            tgid: *tgid,
            tid: *tgid,
            comm: String::new(),
            user: frames.clone(),
            kernel: vec![],
            count: 1,
        })
        .collect();
    let (mappings, resolved) = symbolizer.resolve_samples(&raw);
    let samples = resolved
        .into_iter()
        .zip(rows)
        .map(|(r, (_, pid, values, labels))| ProfileSample {
            frames: r.frames,
            pid,
            values,
            labels,
        })
        .collect();
    (mappings, samples)
}

/// Least-squares slope (per second) of `points` (seconds, value) and the
/// coefficient of determination r² (1: perfectly steady). `None` with
/// fewer than 3 points or no time spread.
pub(crate) fn slope(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - my).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let b = sxy / sxx;
    let r2 = if syy <= 0.0 {
        1.0
    } else {
        (sxy * sxy) / (sxx * syy)
    };
    Some((b, r2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 * i as f64 + 1.0)).collect();
        let (b, r2) = slope(&pts).unwrap();
        assert!((b - 3.0).abs() < 1e-9 && (r2 - 1.0).abs() < 1e-9);
        let flat: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 5.0)).collect();
        assert_eq!(slope(&flat).unwrap().0, 0.0);
        assert!(slope(&pts[..2]).is_none());
    }
}
