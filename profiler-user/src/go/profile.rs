//! A pprof builder for resolved stacks with several values per sample
//! (the CPU builder in `profiler-symbolize` has fixed sample types).

use std::{collections::HashMap, time::UNIX_EPOCH};

use diff::pprof::proto::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};
use profiler_symbolize::{MappingDesc, ProfileMeta, ResolvedFrame};

/// One sample to write: frames (leaf first), values, labels.
pub(crate) struct OutSample {
    pub frames: Vec<ResolvedFrame>,
    pub pid: u32,
    pub values: Vec<i64>,
    pub labels: Vec<(String, String)>,
}

/// Shape of a profile: sample types, period type and period.
pub(crate) struct Shape {
    pub sample_types: Vec<(&'static str, &'static str)>,
    pub period_type: (&'static str, &'static str),
    pub period: i64,
    /// The sample type `go tool pprof` shows by default.
    pub default_type: &'static str,
}

#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn intern(&mut self, v: &str) -> i64 {
        if self.table.is_empty() {
            self.table.push(String::new());
            self.index.insert(String::new(), 0);
        }
        if let Some(&i) = self.index.get(v) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(v.to_string());
        self.index.insert(v.to_string(), i);
        i
    }
}

/// Build the profile; samples with the same stack and labels are merged
/// by adding their values.
pub(crate) fn build(
    mappings: &[MappingDesc],
    samples: &[OutSample],
    shape: &Shape,
    meta: &ProfileMeta,
) -> Profile {
    let mut s = Strings::default();
    s.intern("");
    let mut p = Profile {
        sample_type: shape
            .sample_types
            .iter()
            .map(|(t, u)| ValueType {
                r#type: s.intern(t),
                unit: s.intern(u),
            })
            .collect(),
        ..Default::default()
    };
    p.period_type = Some(ValueType {
        r#type: s.intern(shape.period_type.0),
        unit: s.intern(shape.period_type.1),
    });
    p.period = shape.period;
    p.default_sample_type = s.intern(shape.default_type);
    p.time_nanos = meta
        .start
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    p.duration_nanos = i64::try_from(meta.duration.as_nanos()).unwrap_or(i64::MAX);
    p.comment = meta.comments.iter().map(|c| s.intern(c)).collect();

    let mut has_fn = vec![false; mappings.len()];
    let mut has_ln = vec![false; mappings.len()];
    let mut has_inl = vec![false; mappings.len()];
    let mut functions: HashMap<(String, String, String), u64> = HashMap::new();
    let mut locations: HashMap<(u64, u64), u64> = HashMap::new();
    let mut merged: HashMap<(Vec<u64>, u32, Vec<(String, String)>), usize> = HashMap::new();
    for sample in samples {
        let mut ids = Vec::with_capacity(sample.frames.len());
        for fr in &sample.frames {
            let mapping_id = match fr.mapping {
                Some(i) if i < mappings.len() => i as u64 + 1,
                _ => 0,
            };
            let key = (mapping_id, fr.address);
            if let Some(&id) = locations.get(&key) {
                ids.push(id);
                continue;
            }
            let mut lines = Vec::with_capacity(fr.lines.len());
            for l in &fr.lines {
                let fkey = (l.function.clone(), l.system_name.clone(), l.file.clone());
                let next = functions.len() as u64 + 1;
                let fid = *functions.entry(fkey).or_insert_with(|| {
                    p.function.push(Function {
                        id: next,
                        name: s.intern(&l.function),
                        system_name: s.intern(&l.system_name),
                        filename: s.intern(&l.file),
                        start_line: 0,
                    });
                    next
                });
                lines.push(Line {
                    function_id: fid,
                    line: l.line,
                    column: l.column,
                });
            }
            if mapping_id != 0 {
                let m = (mapping_id - 1) as usize;
                has_fn[m] |= !fr.lines.is_empty();
                has_ln[m] |= fr.lines.iter().any(|l| l.line != 0);
                has_inl[m] |= fr.lines.len() > 1;
            }
            let id = p.location.len() as u64 + 1;
            p.location.push(Location {
                id,
                mapping_id,
                address: fr.address,
                line: lines,
                is_folded: false,
            });
            locations.insert(key, id);
            ids.push(id);
        }
        let key = (ids, sample.pid, sample.labels.clone());
        if let Some(&i) = merged.get(&key) {
            for (v, add) in p.sample[i].value.iter_mut().zip(&sample.values) {
                *v = v.saturating_add(*add);
            }
            continue;
        }
        let mut label = vec![Label {
            key: s.intern("pid"),
            num: i64::from(sample.pid),
            ..Default::default()
        }];
        for (k, v) in &sample.labels {
            label.push(Label {
                key: s.intern(k),
                str: s.intern(v),
                ..Default::default()
            });
        }
        merged.insert(key.clone(), p.sample.len());
        p.sample.push(Sample {
            location_id: key.0,
            value: sample.values.clone(),
            label,
        });
    }
    for (i, m) in mappings.iter().enumerate() {
        p.mapping.push(Mapping {
            id: i as u64 + 1,
            memory_start: m.memory_start,
            memory_limit: m.memory_limit,
            file_offset: m.file_offset,
            filename: s.intern(&m.path),
            build_id: s.intern(&m.build_id),
            has_functions: has_fn[i],
            has_filenames: has_ln[i],
            has_line_numbers: has_ln[i],
            has_inline_frames: has_inl[i],
        });
    }
    p.string_table = s.table;
    p
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
