//! [`Builder`]: the one place that assigns ids and interns strings,
//! mappings, functions, locations and samples.

use std::collections::hash_map::Entry;

use crate::hash::FxHashMap;
use crate::proto;

/// A line of a location, by function id (from [`Builder::function`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LineSpec {
    /// Function id.
    pub function_id: u64,
    /// Line number, 0 when unknown.
    pub line: i64,
    /// Column, 0 when unknown.
    pub column: i64,
}

/// A sample label: a string value, or a number with an optional unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelSpec<'a> {
    /// `key = "value"`.
    Str(&'a str, &'a str),
    /// `key = num unit` (unit may be empty).
    Num(&'a str, i64, &'a str),
}

/// (file name, build id, start, limit, offset, has_* flags), strings interned.
type MappingKey = (i64, i64, u64, u64, u64, [bool; 4]);
/// (mapping id, address, lines, is_folded).
type LocationKey = (u64, u64, Vec<LineSpec>, bool);
/// (location ids, labels as (key, str, num, num_unit)).
type SampleKey = (Vec<u64>, Vec<(i64, i64, i64, i64)>);

/// Builds a [`proto::Profile`] incrementally. Strings, mappings
/// ([`Builder::mapping`]), functions, locations and samples
/// ([`Builder::sample`]) are deduplicated: adding an equal one returns the
/// existing id (samples add their values, saturating). Ids start at 1 in
/// order of first appearance.
#[derive(Debug, Default)]
pub struct Builder {
    p: proto::Profile,
    strings: FxHashMap<String, i64>,
    mappings: FxHashMap<MappingKey, u64>,
    functions: FxHashMap<(i64, i64, i64, i64), u64>,
    locations: FxHashMap<LocationKey, u64>,
    by_address: FxHashMap<(u64, u64), u64>,
    samples: FxHashMap<SampleKey, usize>,
}

impl Builder {
    /// A builder for a profile with these (type, unit) sample types.
    pub fn new(sample_types: &[(&str, &str)]) -> Self {
        let mut b = Builder::default();
        b.intern("");
        b.p.sample_type = sample_types
            .iter()
            .map(|(t, u)| b.value_type(t, u))
            .collect();
        b
    }

    fn value_type(&mut self, t: &str, u: &str) -> proto::ValueType {
        proto::ValueType {
            r#type: self.intern(t),
            unit: self.intern(u),
        }
    }

    /// The index of `s` in the string table, appending it when new.
    pub fn intern(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.p.string_table.len() as i64;
        self.p.string_table.push(s.to_owned());
        self.strings.insert(s.to_owned(), i);
        i
    }

    /// Number of sample types.
    pub fn sample_type_count(&self) -> usize {
        self.p.sample_type.len()
    }

    /// Sets the period type and period.
    pub fn set_period(&mut self, period_type: Option<(&str, &str)>, period: i64) {
        self.p.period_type = period_type.map(|(t, u)| self.value_type(t, u));
        self.p.period = period;
    }

    /// Sets the default sample type (`None` or empty: unset).
    pub fn set_default_sample_type(&mut self, name: Option<&str>) {
        self.p.default_sample_type = match name {
            Some(n) if !n.is_empty() => self.intern(n),
            _ => 0,
        };
    }

    /// Sets `drop_frames` and `keep_frames` (empty: unset).
    pub fn set_frame_filters(&mut self, drop: &str, keep: &str) {
        self.p.drop_frames = if drop.is_empty() {
            0
        } else {
            self.intern(drop)
        };
        self.p.keep_frames = if keep.is_empty() {
            0
        } else {
            self.intern(keep)
        };
    }

    /// Sets the start time and duration, in nanoseconds.
    pub fn set_time(&mut self, time_nanos: i64, duration_nanos: i64) {
        self.p.time_nanos = time_nanos;
        self.p.duration_nanos = duration_nanos;
    }

    /// Appends a comment (duplicates kept).
    pub fn comment(&mut self, text: &str) {
        let i = self.intern(text);
        self.p.comment.push(i);
    }

    /// Appends a comment unless an equal one exists or there are already
    /// `max` comments; returns whether it was added.
    pub fn comment_distinct(&mut self, text: &str, max: usize) -> bool {
        let i = self.intern(text);
        if self.p.comment.contains(&i) || self.p.comment.len() >= max {
            return false;
        }
        self.p.comment.push(i);
        true
    }

    /// The id of a mapping equal to `m` (file name, build id, range,
    /// offset, flags; `m.id`, `m.filename` and `m.build_id` are ignored),
    /// adding it when new.
    pub fn mapping(&mut self, m: &proto::Mapping, filename: &str, build_id: &str) -> u64 {
        let key = (
            self.intern(filename),
            self.intern(build_id),
            m.memory_start,
            m.memory_limit,
            m.file_offset,
            [
                m.has_functions,
                m.has_filenames,
                m.has_line_numbers,
                m.has_inline_frames,
            ],
        );
        if let Some(&id) = self.mappings.get(&key) {
            return id;
        }
        let id = self.push_mapping(m, filename, build_id);
        self.mappings.insert(key, id);
        id
    }

    /// Adds a mapping without looking for an equal one (ids stay in the
    /// order of the calls: the n-th call returns n when no
    /// [`Self::mapping`] call came first).
    pub fn push_mapping(&mut self, m: &proto::Mapping, filename: &str, build_id: &str) -> u64 {
        let id = self.p.mapping.len() as u64 + 1;
        let (filename, build_id) = (self.intern(filename), self.intern(build_id));
        self.p.mapping.push(proto::Mapping {
            id,
            filename,
            build_id,
            ..m.clone()
        });
        id
    }

    /// Sets each mapping's `has_*` flags from the locations in it: functions
    /// when a location has lines, file names and line numbers when a line
    /// number is known, inline frames when a location has several lines.
    pub fn derive_mapping_flags(&mut self) {
        let mut flags = vec![[false; 4]; self.p.mapping.len()];
        for l in &self.p.location {
            let Some(f) = (l.mapping_id as usize)
                .checked_sub(1)
                .and_then(|i| flags.get_mut(i))
            else {
                continue;
            };
            f[0] |= !l.line.is_empty();
            let ln = l.line.iter().any(|x| x.line != 0);
            f[1] |= ln;
            f[2] |= ln;
            f[3] |= l.line.len() > 1;
        }
        for (m, f) in self.p.mapping.iter_mut().zip(flags) {
            [
                m.has_functions,
                m.has_filenames,
                m.has_line_numbers,
                m.has_inline_frames,
            ] = f;
        }
    }

    /// The id of the function (name, system name, file, start line),
    /// adding it when new.
    pub fn function(&mut self, name: &str, system_name: &str, file: &str, start_line: i64) -> u64 {
        let key = (
            self.intern(name),
            self.intern(system_name),
            self.intern(file),
            start_line,
        );
        let next = self.p.function.len() as u64 + 1;
        match self.functions.entry(key) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => {
                e.insert(next);
                self.p.function.push(proto::Function {
                    id: next,
                    name: key.0,
                    system_name: key.1,
                    filename: key.2,
                    start_line,
                });
                next
            }
        }
    }

    /// The id of the location (mapping id or 0, address, lines innermost
    /// first, folded), adding it when new.
    pub fn location(
        &mut self,
        mapping_id: u64,
        address: u64,
        lines: &[LineSpec],
        is_folded: bool,
    ) -> u64 {
        let key = (mapping_id, address, lines.to_vec(), is_folded);
        if let Some(&id) = self.locations.get(&key) {
            return id;
        }
        let id = self.p.location.len() as u64 + 1;
        self.p.location.push(proto::Location {
            id,
            mapping_id,
            address,
            line: lines
                .iter()
                .map(|l| proto::Line {
                    function_id: l.function_id,
                    line: l.line,
                    column: l.column,
                })
                .collect(),
            is_folded,
        });
        self.locations.insert(key, id);
        id
    }

    /// The location at (`mapping_id`, `address`) when one was added
    /// through this method before, else the one `lines()` describes (so
    /// the lines of the first frame seen at an address win, and
    /// symbolizing the same address twice costs one lookup).
    pub fn location_at(
        &mut self,
        mapping_id: u64,
        address: u64,
        lines: impl FnOnce(&mut Self) -> Vec<LineSpec>,
    ) -> u64 {
        if let Some(&id) = self.by_address.get(&(mapping_id, address)) {
            return id;
        }
        let lines = lines(self);
        let id = self.location(mapping_id, address, &lines, false);
        self.by_address.insert((mapping_id, address), id);
        id
    }

    fn labels(&mut self, labels: &[LabelSpec<'_>]) -> Vec<(i64, i64, i64, i64)> {
        labels
            .iter()
            .map(|l| match *l {
                LabelSpec::Str(k, v) => (self.intern(k), self.intern(v), 0, 0),
                LabelSpec::Num(k, n, u) => (
                    self.intern(k),
                    0,
                    n,
                    if u.is_empty() { 0 } else { self.intern(u) },
                ),
            })
            .collect()
    }

    /// Adds a sample (location ids leaf first, one value per sample type),
    /// or adds `values` (saturating) to an earlier sample with the same
    /// locations and labels (in the same order).
    pub fn sample(&mut self, location_ids: Vec<u64>, labels: &[LabelSpec<'_>], values: &[i64]) {
        let labels = self.labels(labels);
        self.sample_interned(location_ids, labels, values);
    }

    /// [`Self::sample`] with labels already interned as (key, str, num,
    /// num_unit) string indexes of this builder.
    pub fn sample_interned(
        &mut self,
        location_ids: Vec<u64>,
        labels: Vec<(i64, i64, i64, i64)>,
        values: &[i64],
    ) {
        let key = (location_ids, labels);
        if let Some(&i) = self.samples.get(&key) {
            for (v, add) in self.p.sample[i].value.iter_mut().zip(values) {
                *v = v.saturating_add(*add);
            }
            return;
        }
        self.p.sample.push(wire_sample(&key.0, &key.1, values));
        self.samples.insert(key, self.p.sample.len() - 1);
    }

    /// Adds a sample without merging it into an equal one.
    pub fn push_sample(
        &mut self,
        location_ids: Vec<u64>,
        labels: &[LabelSpec<'_>],
        values: &[i64],
    ) {
        let labels = self.labels(labels);
        self.p
            .sample
            .push(wire_sample(&location_ids, &labels, values));
    }

    /// The profile built so far (for reading; ids are final).
    pub fn profile(&self) -> &proto::Profile {
        &self.p
    }

    /// The finished profile.
    pub fn finish(self) -> proto::Profile {
        self.p
    }
}

fn wire_sample(locs: &[u64], labels: &[(i64, i64, i64, i64)], values: &[i64]) -> proto::Sample {
    proto::Sample {
        location_id: locs.to_vec(),
        value: values.to_vec(),
        label: labels
            .iter()
            .map(|&(key, str, num, num_unit)| proto::Label {
                key,
                str,
                num,
                num_unit,
            })
            .collect(),
    }
}
