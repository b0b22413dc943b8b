//! [`Merger`]: several profiles into one, losslessly.

use crate::hash::FxHashMap;
use crate::{proto, Builder, LineSpec};

/// Why a profile could not be merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MergeError {
    /// Its sample types differ from those of the profiles merged before.
    #[error("sample types {found} differ from {expected} of the profiles merged before")]
    SampleTypeMismatch {
        /// This profile's sample types, `type/unit` comma-separated.
        found: String,
        /// The first profile's.
        expected: String,
    },
    /// A reference inside the profile is broken (string index out of
    /// range, missing mapping, function or location, wrong value count).
    #[error("{0}")]
    Invalid(String),
}

/// Merges profiles, keeping everything `go tool pprof` shows: mappings
/// (file, build id, ranges, offsets, flags), functions (name, system name,
/// file, start line), locations (address, lines with columns, folding)
/// and labels (strings and numbers with units).
///
/// Equal mappings, functions and locations are shared; samples with the
/// same locations and labels are summed (saturating). All profiles must
/// have the same sample types (type and unit, in order). Period type,
/// period, default sample type and drop/keep frames come from the first
/// profile; distinct comments are kept (at most [`Merger::MAX_COMMENTS`]);
/// `time_nanos`/`duration_nanos` cover the earliest start to the latest
/// end. Broken references are errors, never panics.
#[derive(Debug, Default)]
pub struct Merger {
    b: Option<Builder>,
    sample_types: Vec<(String, String)>,
    span: Option<(i64, i64)>,
    profiles: usize,
}

impl Merger {
    /// Most distinct comments carried into a merged profile.
    pub const MAX_COMMENTS: usize = 32;

    /// An empty merger.
    pub fn new() -> Self {
        Merger::default()
    }

    /// Number of profiles added so far.
    pub fn profiles(&self) -> usize {
        self.profiles
    }

    /// Adds one profile. On error the merger is unchanged except for
    /// strings, mappings, functions and locations that may have been
    /// added (harmless: unreferenced entries).
    pub fn add(&mut self, p: &proto::Profile) -> Result<(), MergeError> {
        let st = |i: i64| -> Result<&str, MergeError> {
            p.string(i)
                .ok_or_else(|| MergeError::Invalid(format!("string index {i} out of range")))
        };
        let types = p
            .sample_type
            .iter()
            .map(|t| Ok((st(t.r#type)?.to_owned(), st(t.unit)?.to_owned())))
            .collect::<Result<Vec<_>, MergeError>>()?;
        let b = match &mut self.b {
            Some(b) => {
                if self.sample_types != types {
                    let show = |v: &[(String, String)]| {
                        v.iter()
                            .map(|(t, u)| format!("{t}/{u}"))
                            .collect::<Vec<_>>()
                            .join(",")
                    };
                    return Err(MergeError::SampleTypeMismatch {
                        found: show(&types),
                        expected: show(&self.sample_types),
                    });
                }
                b
            }
            None => {
                let refs: Vec<(&str, &str)> = types
                    .iter()
                    .map(|(t, u)| (t.as_str(), u.as_str()))
                    .collect();
                let mut b = Builder::new(&refs);
                let pt = match &p.period_type {
                    Some(pt) => Some((st(pt.r#type)?, st(pt.unit)?)),
                    None => None,
                };
                b.set_period(pt, p.period);
                b.set_default_sample_type(Some(st(p.default_sample_type)?));
                b.set_frame_filters(st(p.drop_frames)?, st(p.keep_frames)?);
                self.sample_types = types;
                self.b.insert(b)
            }
        };
        for &c in &p.comment {
            b.comment_distinct(st(c)?, Self::MAX_COMMENTS);
        }
        let mut mapping_ids: FxHashMap<u64, u64> = FxHashMap::default();
        for m in &p.mapping {
            let id = b.mapping(m, st(m.filename)?, st(m.build_id)?);
            mapping_ids.insert(m.id, id);
        }
        let mut function_ids: FxHashMap<u64, u64> = FxHashMap::default();
        for f in &p.function {
            let id = b.function(
                st(f.name)?,
                st(f.system_name)?,
                st(f.filename)?,
                f.start_line,
            );
            function_ids.insert(f.id, id);
        }
        let mut location_ids: FxHashMap<u64, u64> = FxHashMap::default();
        for l in &p.location {
            let mapping_id = if l.mapping_id == 0 {
                0
            } else {
                *mapping_ids.get(&l.mapping_id).ok_or_else(|| {
                    MergeError::Invalid(format!(
                        "location {} refers to missing mapping {}",
                        l.id, l.mapping_id
                    ))
                })?
            };
            let lines = l
                .line
                .iter()
                .map(|ln| {
                    let f = function_ids.get(&ln.function_id).ok_or_else(|| {
                        MergeError::Invalid(format!(
                            "location {} refers to missing function {}",
                            l.id, ln.function_id
                        ))
                    })?;
                    Ok(LineSpec {
                        function_id: *f,
                        line: ln.line,
                        column: ln.column,
                    })
                })
                .collect::<Result<Vec<_>, MergeError>>()?;
            let id = b.location(mapping_id, l.address, &lines, l.is_folded);
            location_ids.insert(l.id, id);
        }
        let n = self.sample_types.len();
        for (i, s) in p.sample.iter().enumerate() {
            if s.value.len() != n {
                return Err(MergeError::Invalid(format!(
                    "sample {i} has {} values for {n} sample types",
                    s.value.len()
                )));
            }
            let locs = s
                .location_id
                .iter()
                .map(|id| {
                    location_ids.get(id).copied().ok_or_else(|| {
                        MergeError::Invalid(format!("sample {i} refers to missing location {id}"))
                    })
                })
                .collect::<Result<Vec<_>, MergeError>>()?;
            let labels = s
                .label
                .iter()
                .map(|l| {
                    let opt = |b: &mut Builder, i: i64| -> Result<i64, MergeError> {
                        Ok(if i == 0 { 0 } else { b.intern(st(i)?) })
                    };
                    Ok((
                        b.intern(st(l.key)?),
                        opt(b, l.str)?,
                        l.num,
                        opt(b, l.num_unit)?,
                    ))
                })
                .collect::<Result<Vec<_>, MergeError>>()?;
            b.sample_interned(locs, labels, &s.value);
        }
        if p.time_nanos != 0 {
            let end = p.time_nanos.saturating_add(p.duration_nanos.max(0));
            self.span = Some(match self.span {
                Some((a, b)) => (a.min(p.time_nanos), b.max(end)),
                None => (p.time_nanos, end),
            });
        }
        self.profiles += 1;
        Ok(())
    }

    /// The merged profile (an empty one when nothing was added).
    pub fn finish(self) -> proto::Profile {
        let mut b = self.b.unwrap_or_else(|| Builder::new(&[]));
        if let Some((a, e)) = self.span {
            b.set_time(a, e.saturating_sub(a));
        }
        b.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merger_rejects_bad_references_without_panicking() {
        let p = proto::Profile {
            sample_type: vec![proto::ValueType { r#type: 5, unit: 0 }],
            string_table: vec![String::new()],
            ..Default::default()
        };
        assert!(Merger::new().add(&p).is_err());
        let p = proto::Profile {
            sample_type: vec![proto::ValueType { r#type: 1, unit: 2 }],
            sample: vec![proto::Sample {
                location_id: vec![9],
                value: vec![1],
                label: vec![],
            }],
            string_table: vec![String::new(), "samples".into(), "count".into()],
            ..Default::default()
        };
        let e = Merger::new().add(&p).unwrap_err().to_string();
        assert!(e.contains("missing location 9"), "{e}");
    }
}
