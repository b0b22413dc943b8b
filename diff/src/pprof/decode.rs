//! The pprof view ([`profiler_pprof::decode::RawProfile`]) resolved into
//! [`Profile`]: frames named by strings, deduplicated once, stacks as
//! frame ids. The bounded wire decoding itself is the pprof crate's.

use profiler_pprof::decode::{u32_len, IdIndex, PackedIds, RawError, RawProfile, RawSample};
use profiler_pprof::hash::FxHashMap;
use profiler_pprof::Limits;

use crate::error::DecodeError;
use crate::profile::{Frame, FrameId, FrameKind, LabelValue, Profile, Sample, ValueType};

/// Decodes a raw (not gzip'd) pprof protobuf into a [`Profile`].
///
/// Returns `Err(RawError::Wire)` when the bytes are not protobuf, so the
/// caller can try other formats, and a [`DecodeError`] inside
/// `RawError::Limit` for bounds and inconsistent content.
pub(crate) fn decode_raw(data: &[u8], limits: &Limits) -> Result<Profile, RawError> {
    let raw = profiler_pprof::decode::parse(data, limits)?;
    resolve(raw).map_err(|e| RawError::Limit(DecodeError::MalformedPprof(e)))
}

fn resolve(raw: RawProfile<'_>) -> Result<Profile, String> {
    let strings = &raw;
    let vt = |(t, u): (i64, i64), what: &str| -> Result<ValueType, String> {
        Ok(ValueType {
            kind: strings.string(t, &format_args!("{what} type"))?,
            unit: strings.string(u, &format_args!("{what} unit"))?,
        })
    };
    let sample_types = raw
        .sample_types
        .iter()
        .map(|&v| vt(v, "sample_type"))
        .collect::<Result<Vec<_>, _>>()?;
    let period_type = match raw.period_type {
        Some(v) => Some(vt(v, "period_type")?),
        None => None,
    };
    let comments = raw
        .comments
        .iter()
        .map(|&c| strings.string(c, &"comment"))
        .collect::<Result<Vec<_>, _>>()?;
    let default_sample_type = strings.string(raw.default_sample_type, &"default_sample_type")?;

    // Functions: id -> (name, file).
    let fidx = IdIndex::build(raw.functions.iter().map(|f| f.id), "function")?;
    let mut funcs: Vec<(String, String)> = Vec::with_capacity(raw.functions.len());
    for f in &raw.functions {
        let what = format_args!("function {}", f.id);
        let mut name = strings.string(f.name, &what)?;
        let system = strings.string(f.system_name, &what)?;
        if name.is_empty() {
            name = system;
        }
        funcs.push((name, strings.string(f.filename, &what)?));
    }

    // Mappings.
    let midx = IdIndex::build(raw.mappings.iter().map(|m| m.id), "mapping")?;
    let mut mapping_names = Vec::with_capacity(raw.mappings.len());
    for m in &raw.mappings {
        mapping_names.push(strings.string(m.filename, &format_args!("mapping {}", m.id))?);
    }

    // Locations -> frames (innermost first), interned by an integer key so
    // strings are cloned once per distinct frame.
    let lidx = IdIndex::build(raw.locations.iter().map(|l| l.id), "location")?;
    let mut frames: Vec<Frame> = Vec::new();
    // (function index or u32::MAX, line, inlined, mapping index or u32::MAX, address)
    type Key = (u32, i64, bool, u32, u64);
    let mut interned: FxHashMap<Key, FrameId> = FxHashMap::default();
    let mut loc_frames: Vec<FrameId> = Vec::new();
    let mut loc_ranges: Vec<(u32, u32)> = Vec::with_capacity(raw.locations.len());
    let kinds: Vec<FrameKind> = mapping_names
        .iter()
        .map(|name| {
            if name.starts_with("[kernel") || name == "vmlinux" {
                FrameKind::Kernel
            } else {
                FrameKind::User
            }
        })
        .collect();
    for l in &raw.locations {
        let (mi, rel) = if l.mapping_id == 0 {
            (u32::MAX, l.address)
        } else {
            let mi = midx.get(l.mapping_id).ok_or_else(|| {
                format!(
                    "location {} refers to mapping id {} which does not exist",
                    l.id, l.mapping_id
                )
            })?;
            (mi as u32, raw.mappings[mi].file_address(l.address))
        };
        let start = u32_len(&loc_frames);
        let lines = &raw.lines[l.lines.0 as usize..l.lines.1 as usize];
        let mut push = |key: Key| {
            let id = *interned.entry(key).or_insert_with(|| {
                let (fi, line, inlined, mi, address) = key;
                let (function, file) = match funcs.get(fi as usize) {
                    Some((name, file)) if !name.is_empty() => (name.clone(), file.clone()),
                    Some((_, file)) => (format!("0x{:x}", l.address), file.clone()),
                    None => (format!("0x{:x}", l.address), String::new()),
                };
                let (mapping, kind) = match mapping_names.get(mi as usize) {
                    Some(name) => (name.clone(), kinds[mi as usize]),
                    None => (String::new(), FrameKind::User),
                };
                frames.push(Frame {
                    function,
                    file,
                    line,
                    inlined,
                    kind,
                    mapping,
                    address,
                });
                (frames.len() - 1) as FrameId
            });
            loc_frames.push(id);
        };
        if lines.is_empty() {
            // Unsymbolized: the frame is named by its absolute address, so the
            // key must include it even when the relative address collides.
            push((u32::MAX, l.address as i64, false, mi, rel));
        }
        for (k, ln) in lines.iter().enumerate() {
            let (fid, line) = (ln.function_id, ln.line);
            let fi = fidx.get(fid).ok_or_else(|| {
                format!(
                    "location {} has a line with function id {fid} which does not exist",
                    l.id
                )
            })?;
            push((fi as u32, line, k + 1 < lines.len(), mi, rel));
        }
        loc_ranges.push((start, u32_len(&loc_frames)));
    }
    drop(interned);

    // Samples, written in place: a large profile resolves its two halves
    // on two threads (the first error in sample order wins either way).
    let n_types = sample_types.len();
    let run = |first: usize, chunk: &[RawSample<'_>], out: &mut [Sample]| {
        resolve_samples(
            &raw,
            first,
            chunk,
            out,
            n_types,
            &lidx,
            &loc_ranges,
            &loc_frames,
        )
    };
    let mut samples: Vec<Sample> = Vec::new();
    samples.resize_with(raw.samples.len(), Sample::default);
    if raw.samples.len() >= PARALLEL_SAMPLES {
        let half = raw.samples.len() / 2;
        let (a, b) = raw.samples.split_at(half);
        let (oa, ob) = samples.split_at_mut(half);
        let (ra, rb) = std::thread::scope(|s| {
            let rb = s.spawn(|| run(half, b, ob));
            let ra = run(0, a, oa);
            (
                ra,
                rb.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            )
        });
        ra?;
        rb?;
    } else {
        run(0, &raw.samples, &mut samples)?;
    }

    Ok(Profile {
        sample_types,
        default_sample_type: (!default_sample_type.is_empty()).then_some(default_sample_type),
        period_type,
        period: raw.period,
        time_nanos: raw.time_nanos,
        duration_nanos: raw.duration_nanos,
        comments,
        frames,
        samples,
    })
}

/// Fewest samples for which [`resolve`] uses a second thread.
const PARALLEL_SAMPLES: usize = 20_000;

/// Resolves `chunk`, the samples of `raw` from index `first` on, into
/// `out` (as long as `chunk`).
#[allow(clippy::too_many_arguments)]
fn resolve_samples(
    raw: &RawProfile<'_>,
    first: usize,
    chunk: &[RawSample<'_>],
    out: &mut [Sample],
    n_types: usize,
    lidx: &IdIndex,
    loc_ranges: &[(u32, u32)],
    loc_frames: &[FrameId],
) -> Result<(), String> {
    let strings = raw;
    let mut label_keys: FxHashMap<i64, String> = FxHashMap::default();
    // Frames of a location by its id: one lookup when ids are dense.
    let by_id: Option<Vec<(u32, u32)>> = match lidx {
        IdIndex::Dense(v) => Some(
            v.iter()
                .map(|&li| match loc_ranges.get(li as usize) {
                    Some(&r) => r,
                    None => (u32::MAX, u32::MAX),
                })
                .collect(),
        ),
        IdIndex::Sparse(_) => None,
    };
    let range_of = |id: u64| -> Option<(u32, u32)> {
        match &by_id {
            Some(v) => v.get(id as usize).copied().filter(|&(a, _)| a != u32::MAX),
            None => lidx.get(id).map(|li| loc_ranges[li]),
        }
    };
    let mut buf: Vec<FrameId> = Vec::with_capacity(256);
    for (i, (s, slot)) in chunk.iter().zip(out).enumerate() {
        let si = first + i;
        let values = &raw.values[s.values.0 as usize..s.values.1 as usize];
        if values.len() != n_types {
            return Err(format!(
                "sample {si} has {} values but the profile has {n_types} sample types",
                values.len()
            ));
        }
        // Frames into a reused buffer, then one exact allocation.
        buf.clear();
        if let (Some(tab), false) = (&by_id, s.packed_locs.is_empty()) {
            // The usual case (dense ids, packed field) in one loop: the
            // decoder validated the field (whole varints of at most nine
            // bytes), so every varint ends inside it and none overflows.
            for id in PackedIds::new(s.packed_locs) {
                let (a, b) = match tab.get(id as usize) {
                    Some(&(a, b)) if a != u32::MAX => (a, b),
                    _ => {
                        return Err(format!(
                            "sample {si} refers to location id {id} which does not exist"
                        ))
                    }
                };
                if b == a + 1 {
                    buf.push(loc_frames[a as usize]);
                } else {
                    buf.extend_from_slice(&loc_frames[a as usize..b as usize]);
                }
            }
        } else {
            resolve_ids(raw.sample_locations(s), si, &range_of, loc_frames, &mut buf)?;
        }
        let stack = buf.clone();
        let mut labels = Vec::new();
        for l in &raw.labels[s.labels.0 as usize..s.labels.1 as usize] {
            let key = match label_keys.get(&l.key) {
                Some(k) => k.clone(),
                None => {
                    let k = strings.string(l.key, &format_args!("sample {si} label key"))?;
                    label_keys.insert(l.key, k.clone());
                    k
                }
            };
            if l.str != 0 {
                let v = strings.string(l.str, &format_args!("sample {si} label {key}"))?;
                labels.push((key, LabelValue::Str(v)));
            } else if l.num != 0 || l.num_unit != 0 {
                let unit =
                    strings.string(l.num_unit, &format_args!("sample {si} label {key} unit"))?;
                labels.push((key, LabelValue::Num(l.num, unit)));
            }
        }
        *slot = Sample {
            stack,
            values: values.to_vec(),
            labels,
        };
    }
    Ok(())
}

/// Appends the frames of location `ids` (any encoding, any id layout) to
/// `buf`; an unknown id is an error naming sample `si`.
fn resolve_ids(
    ids: impl Iterator<Item = u64>,
    si: usize,
    range_of: &impl Fn(u64) -> Option<(u32, u32)>,
    loc_frames: &[FrameId],
    buf: &mut Vec<FrameId>,
) -> Result<(), String> {
    for id in ids {
        let (a, b) = range_of(id).ok_or_else(|| {
            format!("sample {si} refers to location id {id} which does not exist")
        })?;
        if b == a + 1 {
            // Usually one frame (two or three when inlined).
            buf.push(loc_frames[a as usize]);
        } else {
            buf.extend_from_slice(&loc_frames[a as usize..b as usize]);
        }
    }
    Ok(())
}
