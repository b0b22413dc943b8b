//! [`Profile`] to pprof protobuf, through the pprof crate's [`Builder`].

use profiler_pprof::{proto, Builder, LabelSpec, LineSpec};

use crate::profile::{FrameKind, LabelValue, Profile};

/// Converts a profile to the pprof wire type.
///
/// Consecutive frames of a stack where all but the last are `inlined`
/// become one `Location` with several `Line`s (innermost first), so an
/// inlining chain read from pprof is written back the same way. Every
/// frame gets a `Function` (unsymbolized `0x...` frames too, so names
/// round-trip exactly); mappings are recreated from frame mapping names
/// with zero address ranges (the diff model keeps no build ids or
/// ranges), and `Location.address` is the frame's mapping-relative
/// address. Kernel frames without a mapping name get the mapping
/// `[kernel.kallsyms]`. Samples are written one for one (not merged).
///
/// The profile must be valid ([`Profile::check_valid`]): a stack entry
/// naming a frame that does not exist panics.
pub fn to_proto(p: &Profile) -> proto::Profile {
    let types: Vec<(&str, &str)> = p
        .sample_types
        .iter()
        .map(|t| (t.kind.as_str(), t.unit.as_str()))
        .collect();
    let mut b = Builder::new(&types);
    let frame_fn: Vec<u64> = p
        .frames
        .iter()
        .map(|f| b.function(&f.function, &f.function, &f.file, 0))
        .collect();
    let all_flags = proto::Mapping {
        has_functions: true,
        has_filenames: true,
        has_line_numbers: true,
        has_inline_frames: true,
        ..Default::default()
    };
    let mut lines = Vec::new();
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
            let outer = &p.frames[fid as usize];
            let mname = if outer.mapping.is_empty() && outer.kind == FrameKind::Kernel {
                "[kernel.kallsyms]"
            } else {
                outer.mapping.as_str()
            };
            let mapping_id = if mname.is_empty() {
                0
            } else {
                b.mapping(&all_flags, mname, "")
            };
            lines.clear();
            lines.extend(group.iter().map(|&g| LineSpec {
                function_id: frame_fn[g as usize],
                line: p.frames[g as usize].line,
                column: 0,
            }));
            loc_ids.push(b.location(mapping_id, outer.address, &lines, false));
        }
        let labels: Vec<LabelSpec<'_>> = s
            .labels
            .iter()
            .map(|(k, v)| match v {
                LabelValue::Str(v) => LabelSpec::Str(k, v),
                LabelValue::Num(n, u) => LabelSpec::Num(k, *n, u),
            })
            .collect();
        b.push_sample(loc_ids, &labels, &s.values);
    }
    b.set_period(
        p.period_type
            .as_ref()
            .map(|t| (t.kind.as_str(), t.unit.as_str())),
        p.period,
    );
    b.set_time(p.time_nanos, p.duration_nanos);
    for c in &p.comments {
        b.comment(c);
    }
    b.set_default_sample_type(p.default_sample_type.as_deref());
    b.finish()
}

/// Encodes a profile as raw (uncompressed) pprof protobuf bytes.
pub fn encode_raw(p: &Profile) -> Vec<u8> {
    profiler_pprof::encode_raw(&to_proto(p))
}

/// Encodes a profile as gzip'd pprof, the form `go tool pprof` and most
/// tools write and read.
pub fn encode_gzip(p: &Profile) -> Vec<u8> {
    profiler_pprof::encode_gzip(&to_proto(p))
}
