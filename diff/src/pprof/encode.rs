//! [`Profile`] to pprof protobuf (the prost types in [`super::proto`]).

use std::collections::HashMap;
use std::io::Write;

use prost::Message;

use super::proto;
use crate::profile::{FrameId, FrameKind, LabelValue, Profile};

#[derive(Default)]
struct StringTable {
    strings: Vec<String>,
    index: HashMap<String, i64>,
}

impl StringTable {
    fn new() -> Self {
        let mut t = StringTable::default();
        t.intern("");
        t
    }
    fn intern(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.strings.len() as i64;
        self.strings.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }
}

/// Converts a profile to the pprof wire type.
///
/// Consecutive frames of a stack where all but the last are `inlined`
/// become one `Location` with several `Line`s (innermost first), so an
/// inlining chain read from pprof is written back the same way. Every
/// frame gets a `Function` (unsymbolized `0x...` frames too, so names
/// round-trip exactly); mappings are recreated from frame mapping names
/// with zero address ranges, and `Location.address` is the frame's
/// mapping-relative address. Kernel frames without a mapping name get
/// the mapping `[kernel.kallsyms]`.
///
/// The profile must be valid ([`Profile::check_valid`]): a stack entry
/// naming a frame that does not exist panics.
pub fn to_proto(p: &Profile) -> proto::Profile {
    let mut st = StringTable::new();
    let mut out = proto::Profile {
        sample_type: p
            .sample_types
            .iter()
            .map(|t| proto::ValueType {
                r#type: st.intern(&t.kind),
                unit: st.intern(&t.unit),
            })
            .collect(),
        ..Default::default()
    };
    let mut functions: HashMap<(&str, &str), u64> = HashMap::new();
    let mut mappings: HashMap<&str, u64> = HashMap::new();
    let mut locations: HashMap<Vec<FrameId>, u64> = HashMap::new();
    let mut frame_fn: Vec<u64> = vec![0; p.frames.len()];
    for (i, f) in p.frames.iter().enumerate() {
        let key = (f.function.as_str(), f.file.as_str());
        let next = functions.len() as u64 + 1;
        let id = *functions.entry(key).or_insert_with(|| {
            out.function.push(proto::Function {
                id: next,
                name: st.intern(&f.function),
                system_name: st.intern(&f.function),
                filename: st.intern(&f.file),
                start_line: 0,
            });
            next
        });
        frame_fn[i] = id;
    }
    for s in &p.samples {
        let mut loc_ids = Vec::with_capacity(s.stack.len());
        let mut start = 0;
        for (i, &fid) in s.stack.iter().enumerate() {
            let inl = p.frames.get(fid as usize).is_some_and(|f| f.inlined);
            if inl && i + 1 < s.stack.len() {
                continue;
            }
            let group = &s.stack[start..=i];
            start = i + 1;
            let id = match locations.get(group) {
                Some(&id) => id,
                None => {
                    let id = out.location.len() as u64 + 1;
                    let outer = &p.frames[fid as usize];
                    let mname = if outer.mapping.is_empty() && outer.kind == FrameKind::Kernel {
                        "[kernel.kallsyms]"
                    } else {
                        outer.mapping.as_str()
                    };
                    let mapping_id = if mname.is_empty() {
                        0
                    } else {
                        let next = mappings.len() as u64 + 1;
                        *mappings.entry(mname).or_insert_with(|| {
                            out.mapping.push(proto::Mapping {
                                id: next,
                                filename: st.intern(mname),
                                has_functions: true,
                                has_filenames: true,
                                has_line_numbers: true,
                                has_inline_frames: true,
                                ..Default::default()
                            });
                            next
                        })
                    };
                    out.location.push(proto::Location {
                        id,
                        mapping_id,
                        address: outer.address,
                        line: group
                            .iter()
                            .map(|&g| proto::Line {
                                function_id: frame_fn[g as usize],
                                line: p.frames[g as usize].line,
                                column: 0,
                            })
                            .collect(),
                        is_folded: false,
                    });
                    locations.insert(group.to_vec(), id);
                    id
                }
            };
            loc_ids.push(id);
        }
        let label = s
            .labels
            .iter()
            .map(|(k, v)| match v {
                LabelValue::Str(v) => proto::Label {
                    key: st.intern(k),
                    str: st.intern(v),
                    num: 0,
                    num_unit: 0,
                },
                LabelValue::Num(n, u) => proto::Label {
                    key: st.intern(k),
                    str: 0,
                    num: *n,
                    num_unit: st.intern(u),
                },
            })
            .collect();
        out.sample.push(proto::Sample {
            location_id: loc_ids,
            value: s.values.clone(),
            label,
        });
    }
    if let Some(pt) = &p.period_type {
        out.period_type = Some(proto::ValueType {
            r#type: st.intern(&pt.kind),
            unit: st.intern(&pt.unit),
        });
    }
    out.period = p.period;
    out.time_nanos = p.time_nanos;
    out.duration_nanos = p.duration_nanos;
    out.comment = p.comments.iter().map(|c| st.intern(c)).collect();
    if let Some(d) = &p.default_sample_type {
        out.default_sample_type = st.intern(d);
    }
    out.string_table = st.strings;
    out
}

/// Encodes a profile as raw (uncompressed) pprof protobuf bytes.
pub fn encode_raw(p: &Profile) -> Vec<u8> {
    to_proto(p).encode_to_vec()
}

/// Encodes a profile as gzip'd pprof, the form `go tool pprof` and most
/// tools write and read.
pub fn encode_gzip(p: &Profile) -> Vec<u8> {
    let raw = encode_raw(p);
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(raw.len() / 4),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    gz.write_all(&raw).expect("write to Vec");
    gz.finish().expect("write to Vec")
}
