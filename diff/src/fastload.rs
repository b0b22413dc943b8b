//! The lean path from pprof files to the reduced runs of a
//! [`Comparison`](crate::compare::Comparison): each file is read,
//! gunzipped, decoded into the wire view and reduced straight to
//! normalized stacks, without building a [`Profile`](crate::Profile).
//!
//! The result is the one [`crate::compare::Comparison::new`] builds from
//! loaded profiles: the same function ids (functions are interned run by
//! run in file order, each run's in the order its frames are first seen),
//! the same stacks in the same (first-seen) order and the same sums.
//! Anything this path does not handle the way the general one does (an
//! input that is not pprof protobuf, any error) makes it give up (`None`),
//! and the caller takes the general path, which reports the error.

use std::io::Read;
use std::path::Path;
use std::sync::mpsc;

use profiler_pprof::decode::{IdIndex, PackedIds, RawProfile};
use profiler_pprof::hash::FxHashMap;
use profiler_pprof::Limits;

use crate::normalize::{
    select_sample_type_in, FuncId, FuncTable, Names, Normalizer, Prepared, RunData, Stacks,
};
use crate::profile::{Frame, FrameKind, ValueType};

/// Most files the lean path takes (each decodes on its own thread, all
/// held in memory at once).
pub(crate) const MAX_FILES: usize = 16;

/// The runs of both sides reduced, with the function table and the
/// selected sample type.
pub(crate) struct Reduced {
    pub(crate) table: FuncTable,
    pub(crate) sample_type: ValueType,
    pub(crate) base: Vec<RunData>,
    pub(crate) cand: Vec<RunData>,
    /// The baseline's edge index, built while the candidate's runs were
    /// still loading (for large baselines, see
    /// [`crate::gate::EARLY_BASE_INDEX`]).
    pub(crate) base_edges: Option<crate::gate::SideEdges>,
}

/// What the interning step needs from one decoded file.
struct Header {
    sample_types: Vec<ValueType>,
    default_sample_type: Option<String>,
    names: Names,
}

/// One decoded file's frames: the frames of each location (as indexes
/// into the names' frame list) and its sample-level facts.
struct Frames {
    /// Frame range per location index.
    loc_ranges: Vec<(u32, u32)>,
    lidx: IdIndex,
    period_unit: Option<String>,
    n_types: usize,
}

/// Reads one file within the limits (None on any error).
fn read(path: &Path, limits: &Limits) -> Option<Vec<u8>> {
    let file = std::fs::File::open(path).ok()?;
    let size = file.metadata().ok()?.len();
    if size > limits.max_input_bytes || !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut data = Vec::with_capacity(size as usize);
    file.take(limits.max_input_bytes + 1)
        .read_to_end(&mut data)
        .ok()?;
    Some(data)
}

/// Normalizes the frames of `raw` (every check of the general decoder's
/// resolve step that can fail gives None).
fn frames(raw: &RawProfile<'_>, norm: &Normalizer) -> Option<(Header, Frames)> {
    let s = |i: i64| raw.string(i, &"").ok();
    let mut sample_types = Vec::with_capacity(raw.sample_types.len());
    for &(t, u) in &raw.sample_types {
        sample_types.push(ValueType {
            kind: s(t)?,
            unit: s(u)?,
        });
    }
    let period_unit = match raw.period_type {
        Some((t, u)) => {
            s(t)?;
            Some(s(u)?)
        }
        None => None,
    };
    for &c in &raw.comments {
        raw.str_bytes(c, &"").ok()?;
    }
    let default_sample_type = s(raw.default_sample_type)?;
    let opts = norm.options();

    let fidx = IdIndex::build(raw.functions.iter().map(|f| f.id), "function").ok()?;
    for f in &raw.functions {
        raw.str_bytes(f.name, &"").ok()?;
        raw.str_bytes(f.system_name, &"").ok()?;
        raw.str_bytes(f.filename, &"").ok()?;
    }
    let midx = IdIndex::build(raw.mappings.iter().map(|m| m.id), "mapping").ok()?;
    let mut mappings: Vec<(String, FrameKind)> = Vec::with_capacity(raw.mappings.len());
    for m in &raw.mappings {
        let name = s(m.filename)?;
        let kind = if name.starts_with("[kernel") || name == "vmlinux" {
            FrameKind::Kernel
        } else {
            FrameKind::User
        };
        mappings.push((name, kind));
    }
    let lidx = IdIndex::build(raw.locations.iter().map(|l| l.id), "location").ok()?;

    // A function's name as the general decoder names its frames.
    let func_name = |fi: usize| -> Option<String> {
        let f = &raw.functions[fi];
        let name = s(f.name)?;
        Some(if name.is_empty() {
            s(f.system_name)?
        } else {
            name
        })
    };
    let mut files: FxHashMap<i64, String> = FxHashMap::default();
    let mut distinct: Vec<(String, String)> = Vec::new();
    // Named frames: one normalization per (name, system name, file,
    // mapping) string indexes (function records often repeat a name).
    let mut named: FxHashMap<(i64, i64, i64, u32), u32> = FxHashMap::default();
    // Unnamed frames are named by the absolute address of the first
    // location of their frame key, as the general decoder interns them.
    type Key = (u32, i64, bool, u32, u64);
    let mut unnamed_addr: FxHashMap<Key, u64> = FxHashMap::default();
    let mut unnamed: FxHashMap<(String, u32, String), u32> = FxHashMap::default();
    let mut frame_name: Vec<u32> = Vec::with_capacity(raw.lines.len() + 16);
    let mut loc_ranges: Vec<(u32, u32)> = Vec::with_capacity(raw.locations.len());

    let normalize = |function: String,
                     file: &str,
                     mi: u32,
                     files: &mut FxHashMap<i64, String>,
                     file_idx: Option<i64>,
                     distinct: &mut Vec<(String, String)>|
     -> u32 {
        let nfile = match file_idx {
            Some(i) => files
                .entry(i)
                .or_insert_with(|| norm.file_name(file))
                .clone(),
            None => norm.file_name(file),
        };
        let frame = Frame {
            function,
            file: String::new(),
            line: 0,
            inlined: false,
            kind: FrameKind::User,
            mapping: mappings
                .get(mi as usize)
                .map(|m| m.0.clone())
                .unwrap_or_default(),
            address: 0,
        };
        distinct.push((norm.function_name(&frame), nfile));
        (distinct.len() - 1) as u32
    };

    for l in &raw.locations {
        let (mi, rel) = if l.mapping_id == 0 {
            (u32::MAX, l.address)
        } else {
            let mi = midx.get(l.mapping_id)?;
            (mi as u32, raw.mappings[mi].file_address(l.address))
        };
        let kernel = opts.no_kernel
            && mappings
                .get(mi as usize)
                .is_some_and(|m| m.1 == FrameKind::Kernel);
        let start = frame_name.len() as u32;
        let lines = &raw.lines[l.lines.0 as usize..l.lines.1 as usize];
        if lines.is_empty() {
            if kernel {
                frame_name.push(u32::MAX);
            } else {
                let key: Key = (u32::MAX, l.address as i64, false, mi, rel);
                let addr = *unnamed_addr.entry(key).or_insert(l.address);
                let function = format!("0x{addr:x}");
                let k = (function, mi, String::new());
                let id = match unnamed.get(&k) {
                    Some(&id) => id,
                    None => {
                        let id = normalize(k.0.clone(), "", mi, &mut files, None, &mut distinct);
                        unnamed.insert(k, id);
                        id
                    }
                };
                frame_name.push(id);
            }
        }
        for (k, ln) in lines.iter().enumerate() {
            let fi = fidx.get(ln.function_id)?;
            if kernel {
                frame_name.push(u32::MAX);
                continue;
            }
            let f = &raw.functions[fi];
            let file_idx = f.filename;
            let unnamed_fn = raw.str_bytes(f.name, &"").ok()?.is_empty()
                && raw.str_bytes(f.system_name, &"").ok()?.is_empty();
            if !unnamed_fn {
                let key = (f.name, f.system_name, f.filename, mi);
                let id = match named.get(&key) {
                    Some(&id) => id,
                    None => {
                        let file = s(file_idx)?;
                        let id = normalize(
                            func_name(fi)?,
                            &file,
                            mi,
                            &mut files,
                            Some(file_idx),
                            &mut distinct,
                        );
                        named.insert(key, id);
                        id
                    }
                };
                frame_name.push(id);
            } else {
                let key: Key = (fi as u32, ln.line, k + 1 < lines.len(), mi, rel);
                let addr = *unnamed_addr.entry(key).or_insert(l.address);
                let file = s(file_idx)?;
                let k = (format!("0x{addr:x}"), mi, file);
                let id = match unnamed.get(&k) {
                    Some(&id) => id,
                    None => {
                        let id = normalize(
                            k.0.clone(),
                            &k.2,
                            mi,
                            &mut files,
                            Some(file_idx),
                            &mut distinct,
                        );
                        unnamed.insert(k, id);
                        id
                    }
                };
                frame_name.push(id);
            }
        }
        loc_ranges.push((start, frame_name.len() as u32));
    }
    let n_types = sample_types.len();
    Some((
        Header {
            sample_types,
            default_sample_type: (!default_sample_type.is_empty()).then_some(default_sample_type),
            names: Names::from_parts(frame_name, distinct),
        },
        Frames {
            loc_ranges,
            lidx,
            period_unit,
            n_types,
        },
    ))
}

/// The high bit of a resolved location's length: a kernel frame of it
/// was dropped.
const DROPPED: u32 = 1 << 31;

/// Appends the functions of a sample's packed location ids to `buf`, by
/// `tab` (per location id, `(function, 1)` or `(start in funcs, length)`,
/// `(u32::MAX, 0)` for no location): whether a kernel frame was dropped,
/// None on an unknown id. The decoder validated the packed field (whole
/// varints of at most nine bytes). A function of its own, so that this
/// innermost loop keeps its state in registers.
#[inline(never)]
fn push_packed(
    packed: &[u8],
    tab: &[(u32, u32)],
    funcs: &[FuncId],
    buf: &mut Vec<FuncId>,
) -> Option<bool> {
    let mut dropped = false;
    for id in PackedIds::new(packed) {
        let &(a, len) = tab.get(id as usize)?;
        if len == 1 {
            buf.push(a);
        } else if a == u32::MAX {
            return None;
        } else {
            dropped |= len & DROPPED != 0;
            let len = len & !DROPPED;
            buf.extend_from_slice(funcs.get(a as usize..(a + len) as usize)?);
        }
    }
    Some(dropped)
}

/// The per-sample pass: [`Prepared::reduce`] on the wire view (None on a
/// sample the general decoder rejects).
fn reduce(
    raw: &RawProfile<'_>,
    fr: &Frames,
    prep: &Prepared,
    st: usize,
    unit: &str,
    source: &str,
) -> Option<RunData> {
    let n_types = fr.n_types;
    let mut type_totals: Vec<f64> = vec![0.0; n_types];
    // Room for every sample a stack of its own, and for about one function
    // per location id (a packed id takes at least a byte): allocated once,
    // never copied to grow, and only the part used is touched.
    let frames_bound: usize = raw
        .samples
        .iter()
        .map(|s| s.packed_locs.len() + (s.locs.1 - s.locs.0) as usize)
        .sum();
    let mut stacks = Stacks::with_capacity(raw.samples.len(), frames_bound);
    let mut buf: Vec<FuncId> = Vec::with_capacity(128);
    let mut total = 0.0;
    let mut min_positive: Option<i64> = None;
    // Each location's functions resolved once: `funcs[a..a + len]`, the
    // high bit of `len` set when a kernel frame of it was dropped; a
    // location of exactly one function (most) holds the function itself
    // in `a` (len 1), one memory access less per frame.
    let mut funcs: Vec<FuncId> = Vec::with_capacity(fr.loc_ranges.len() + 16);
    let resolved: Vec<(u32, u32)> = fr
        .loc_ranges
        .iter()
        .map(|&(a, b)| {
            let start = funcs.len() as u32;
            let mut dropped = 0;
            for i in a..b {
                match prep.frame_func(i as usize) {
                    Some(f) => funcs.push(f),
                    None => dropped = DROPPED,
                }
            }
            let len = funcs.len() as u32 - start;
            if len == 1 && dropped == 0 {
                (funcs[start as usize], 1)
            } else {
                (start, len | dropped)
            }
        })
        .collect();
    let by_id: Option<Vec<(u32, u32)>> = match &fr.lidx {
        IdIndex::Dense(v) => Some(
            v.iter()
                .map(|&li| match resolved.get(li as usize) {
                    Some(&r) => r,
                    None => (u32::MAX, 0),
                })
                .collect(),
        ),
        IdIndex::Sparse(_) => None,
    };
    let range_of = |id: u64| -> Option<(u32, u32)> {
        match &by_id {
            Some(v) => v.get(id as usize).copied().filter(|&(a, _)| a != u32::MAX),
            None => fr.lidx.get(id).map(|li| resolved[li]),
        }
    };
    let nstrings = raw.strings.len() as u64;
    let string_ok = |i: i64| (i as u64) < nstrings;
    for s in &raw.samples {
        let values = &raw.values[s.values.0 as usize..s.values.1 as usize];
        if values.len() != n_types {
            return None;
        }
        for l in &raw.labels[s.labels.0 as usize..s.labels.1 as usize] {
            if !string_ok(l.key) {
                return None;
            }
            if l.str != 0 {
                if !string_ok(l.str) {
                    return None;
                }
            } else if (l.num != 0 || l.num_unit != 0) && !string_ok(l.num_unit) {
                return None;
            }
        }
        buf.clear();
        let mut dropped_kernel = false;
        let mut push_range = |(a, len): (u32, u32), buf: &mut Vec<FuncId>| {
            if len == 1 {
                buf.push(a);
            } else {
                dropped_kernel |= len & DROPPED != 0;
                let len = len & !DROPPED;
                buf.extend_from_slice(&funcs[a as usize..(a + len) as usize]);
            }
        };
        if let (Some(tab), false) = (&by_id, s.packed_locs.is_empty()) {
            dropped_kernel = push_packed(s.packed_locs, tab, &funcs, &mut buf)?;
        } else {
            for id in raw.sample_locations(s) {
                push_range(range_of(id)?, &mut buf);
            }
        }
        for (t, v) in type_totals.iter_mut().zip(values) {
            *t += *v as f64;
        }
        let v = values[st];
        if v > 0 && min_positive.is_none_or(|m| v < m) {
            min_positive = Some(v);
        }
        if v == 0 {
            continue;
        }
        if !prep.finish_stack(&mut buf, dropped_kernel) {
            continue;
        }
        let v = v as f64;
        total += v;
        stacks.add(&buf, v);
    }
    let weight = match &fr.period_unit {
        Some(u) if u == unit && raw.period > 0 => raw.period as f64,
        _ => min_positive.unwrap_or(1) as f64,
    };
    Some(RunData {
        source: source.to_string(),
        total,
        weight,
        duration_secs: raw.duration_nanos as f64 / 1e9,
        type_totals: Vec::new(),
        stacks,
        size_factor: 1.0,
    })
    .map(|mut r| {
        r.type_totals = type_totals
            .into_iter()
            .map(|t| (String::new(), t))
            .collect();
        r
    })
}

/// Decodes and reduces the files of both sides (see the module docs);
/// None when any file needs the general path.
pub(crate) fn reduce_files(
    base: &[String],
    cand: &[String],
    sample_type: Option<&str>,
    norm: &Normalizer,
) -> Option<Reduced> {
    let paths: Vec<&String> = base.iter().chain(cand).collect();
    if base.is_empty() || cand.is_empty() || paths.len() > MAX_FILES {
        return None;
    }
    let limits = Limits::default();
    let limits = &limits;
    std::thread::scope(|sc| {
        let mut headers = Vec::with_capacity(paths.len());
        let mut replies = Vec::with_capacity(paths.len());
        let mut handles = Vec::with_capacity(paths.len());
        for path in &paths {
            let (htx, hrx) = mpsc::channel::<Option<Header>>();
            let (ptx, prx) = mpsc::channel::<(Prepared, usize, String)>();
            headers.push(hrx);
            replies.push(Some(ptx));
            handles.push(sc.spawn(move || -> Option<RunData> {
                let data = read(Path::new(path.as_str()), limits);
                let bytes = data
                    .as_deref()
                    .and_then(|d| profiler_pprof::decompress(d, limits).ok());
                let raw = bytes
                    .as_deref()
                    .and_then(|b| profiler_pprof::decode::parse(b, limits).ok());
                let Some((header, fr, kinds)) = raw.as_ref().and_then(|raw| {
                    let (h, f) = frames(raw, norm)?;
                    let kinds: Vec<String> =
                        h.sample_types.iter().map(|t| t.kind.clone()).collect();
                    Some((h, f, kinds))
                }) else {
                    let _ = htx.send(None);
                    return None;
                };
                let _ = htx.send(Some(header));
                let (prep, st, unit) = prx.recv().ok()?;
                let raw = raw.as_ref()?;
                let mut run = reduce(raw, &fr, &prep, st, &unit, path)?;
                for (t, k) in run.type_totals.iter_mut().zip(kinds) {
                    t.0 = k;
                }
                Some(run)
            }));
        }
        // Interning in file order (the ids of the general path).
        let mut table = FuncTable::default();
        let mut first: Option<ValueType> = None;
        let mut ok = true;
        for (hrx, reply) in headers.iter().zip(&mut replies) {
            let tx = reply.take();
            if !ok {
                continue;
            }
            let Some(h) = hrx.recv().ok().flatten() else {
                ok = false;
                continue;
            };
            let want = first.as_ref().map(|t| t.kind.clone());
            let Ok(st) = select_sample_type_in(
                &h.sample_types,
                h.default_sample_type.as_deref(),
                want.as_deref().or(sample_type),
            ) else {
                ok = false;
                continue;
            };
            let t = &h.sample_types[st];
            match &first {
                None => first = Some(t.clone()),
                Some(f) if f.unit != t.unit => {
                    ok = false;
                    continue;
                }
                _ => {}
            }
            let prep = Prepared::from_names(h.names, norm, &mut table);
            if let Some(tx) = tx {
                let _ = tx.send((prep, st, t.unit.clone()));
            }
        }
        drop(replies);
        let join = |h: std::thread::ScopedJoinHandle<'_, Option<RunData>>| {
            h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        };
        let mut handles = handles.into_iter();
        // Every thread joined before the results are looked at.
        let base_runs: Vec<Option<RunData>> = handles.by_ref().take(base.len()).map(join).collect();
        let base_runs: Option<Vec<RunData>> = base_runs.into_iter().collect();
        // A large baseline's edges are indexed while the candidate's runs
        // are still loading (the baseline's threads are done).
        let n = table.len();
        let early = match base_runs {
            Some(runs)
                if ok
                    && runs.iter().map(|r| r.stacks.len()).sum::<usize>()
                        >= crate::gate::EARLY_BASE_INDEX =>
            {
                Err(sc.spawn(move || {
                    let stop = std::sync::atomic::AtomicBool::new(false);
                    let edges = crate::gate::index_side(&runs, n, &stop);
                    (runs, edges)
                }))
            }
            other => Ok(other),
        };
        let cand_runs: Vec<Option<RunData>> = handles.map(join).collect();
        let cand_runs: Option<Vec<RunData>> = cand_runs.into_iter().collect();
        let (base_runs, base_edges) = match early {
            Ok(runs) => (runs, None),
            Err(h) => {
                let (runs, edges) = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
                (Some(runs), Some(edges))
            }
        };
        if !ok {
            return None;
        }
        Some(Reduced {
            table,
            sample_type: first?,
            base: base_runs?,
            cand: cand_runs?,
            base_edges,
        })
    })
}
