//! A hand-written, bounded decoder for raw (uncompressed) pprof protobuf.
//!
//! It does not go through prost for three reasons: it reports the byte
//! offset of a wire-format error, it bounds every repeated field before it
//! allocates (see [`Limits`]), and it keeps the string table as borrowed
//! byte slices so invalid UTF-8 is accepted (replaced lossily) the way
//! `go tool pprof` accepts it. Sample data lands in flat vectors: no
//! per-sample allocation until resolution.

use std::collections::HashMap;

use crate::error::DecodeError;
use crate::input::Limits;
use crate::profile::{Frame, FrameId, FrameKind, LabelValue, Profile, Sample, ValueType};

/// A fast non-cryptographic hasher (the Fx hash of rustc) for integer and
/// short string keys built from trusted-size input; hash flooding is not
/// a concern for a profile reader bounded by [`Limits`].
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl std::hash::Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.write_u64(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        for &b in chunks.remainder() {
            self.write_u64(u64::from(b));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.hash = (self.hash.rotate_left(5) ^ i).wrapping_mul(FX_SEED);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// `BuildHasher` for [`FxHasher`].
pub(crate) type FxBuild = std::hash::BuildHasherDefault<FxHasher>;
/// A `HashMap` with [`FxHasher`].
pub(crate) type FxHashMap<K, V> = HashMap<K, V, FxBuild>;

/// Why the raw protobuf could not be decoded.
#[derive(Debug)]
pub(crate) enum RawError {
    /// Wire-format problem: the bytes are not a pprof protobuf.
    Wire(String),
    /// Decoded, but two `time_nanos` fields: concatenated profiles.
    Concatenated,
    /// A configured bound was exceeded.
    Limit(DecodeError),
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Absolute offset of `buf[0]` in the whole input, for messages.
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize) -> Self {
        Reader { buf, pos: 0, base }
    }
    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }
    fn off(&self) -> usize {
        self.base + self.pos
    }
    fn truncated(&self) -> RawError {
        RawError::Wire(format!("truncated protobuf at byte {}", self.off()))
    }
    #[inline]
    fn varint(&mut self) -> Result<u64, RawError> {
        if let Some(&b) = self.buf.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(u64::from(b));
            }
        }
        self.varint_slow()
    }
    #[inline(never)]
    fn varint_slow(&mut self) -> Result<u64, RawError> {
        let mut v: u64 = 0;
        let mut shift = 0u32;
        loop {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.truncated());
            };
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(RawError::Wire(format!(
                    "varint overflows 64 bits at byte {}",
                    self.off() - 1
                )));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
            shift += 7;
            if shift > 63 {
                return Err(RawError::Wire(format!(
                    "varint longer than 10 bytes at byte {}",
                    self.off()
                )));
            }
        }
    }
    fn key(&mut self) -> Result<(u64, u8), RawError> {
        let at = self.off();
        let k = self.varint()?;
        let field = k >> 3;
        let wt = (k & 7) as u8;
        if field == 0 {
            return Err(RawError::Wire(format!("field number 0 at byte {at}")));
        }
        Ok((field, wt))
    }
    /// Reads a length-delimited payload; returns it and its absolute offset.
    fn bytes(&mut self) -> Result<(&'a [u8], usize), RawError> {
        let len = self.varint()?;
        let start = self.pos;
        if len > (self.buf.len() - start) as u64 {
            return Err(RawError::Wire(format!(
                "truncated protobuf at byte {}: length {len} runs past the end",
                self.off()
            )));
        }
        self.pos = start + len as usize;
        Ok((&self.buf[start..self.pos], self.base + start))
    }
    fn skip(&mut self, wt: u8) -> Result<(), RawError> {
        match wt {
            0 => {
                self.varint()?;
            }
            1 => self.advance(8)?,
            2 => {
                self.bytes()?;
            }
            5 => self.advance(4)?,
            _ => {
                return Err(RawError::Wire(format!(
                    "invalid wire type {wt} at byte {}",
                    self.off()
                )))
            }
        }
        Ok(())
    }
    fn advance(&mut self, n: usize) -> Result<(), RawError> {
        if self.buf.len() - self.pos < n {
            return Err(self.truncated());
        }
        self.pos += n;
        Ok(())
    }
    fn expect(&self, field: u64, wt: u8, want: u8) -> Result<(), RawError> {
        if wt != want {
            return Err(RawError::Wire(format!(
                "field {field} has wire type {wt}, expected {want} (near byte {})",
                self.off()
            )));
        }
        Ok(())
    }
    fn int(&mut self, field: u64, wt: u8) -> Result<i64, RawError> {
        self.expect(field, wt, 0)?;
        Ok(self.varint()? as i64)
    }
    fn boolean(&mut self, field: u64, wt: u8) -> Result<bool, RawError> {
        Ok(self.int(field, wt)? != 0)
    }
    /// A repeated varint field, packed or not, appended to `out`.
    #[inline]
    fn repeated<T, F: Fn(u64) -> T>(
        &mut self,
        field: u64,
        wt: u8,
        out: &mut Vec<T>,
        conv: F,
        budget: &mut Budget,
    ) -> Result<(), RawError> {
        match wt {
            0 => {
                budget.take(1)?;
                out.push(conv(self.varint()?));
            }
            2 => {
                let (payload, base) = self.bytes()?;
                // Each varint is at least one byte: this bounds the count.
                budget.take(payload.len() as u64)?;
                let mut r = Reader::new(payload, base);
                while !r.at_end() {
                    out.push(conv(r.varint()?));
                }
            }
            _ => {
                return Err(RawError::Wire(format!(
                    "field {field} has wire type {wt}, expected 0 or 2 (near byte {})",
                    self.off()
                )))
            }
        }
        Ok(())
    }
}

/// Counts entries against [`Limits::max_entries`].
struct Budget {
    left: u64,
    limit: u64,
}

impl Budget {
    fn take(&mut self, n: u64) -> Result<(), RawError> {
        if n > self.left {
            return Err(RawError::Limit(DecodeError::TooMany {
                what: "repeated entries (sample location ids, values, labels, lines)",
                limit: self.limit,
            }));
        }
        self.left -= n;
        Ok(())
    }
}

#[derive(Default)]
struct RawSample {
    locs: (u32, u32),
    values: (u32, u32),
    labels: (u32, u32),
}

#[derive(Default, Clone, Copy)]
struct RawLabel {
    key: i64,
    str: i64,
    num: i64,
    num_unit: i64,
}

#[derive(Default)]
struct RawMapping {
    id: u64,
    start: u64,
    limit: u64,
    offset: u64,
    filename: i64,
}

#[derive(Default)]
struct RawLocation {
    id: u64,
    mapping_id: u64,
    address: u64,
    lines: (u32, u32),
}

#[derive(Default)]
struct RawFunction {
    id: u64,
    name: i64,
    system_name: i64,
    filename: i64,
}

#[derive(Default)]
struct Raw<'a> {
    sample_types: Vec<(i64, i64)>,
    samples: Vec<RawSample>,
    loc_ids: Vec<u64>,
    values: Vec<i64>,
    labels: Vec<RawLabel>,
    mappings: Vec<RawMapping>,
    locations: Vec<RawLocation>,
    lines: Vec<(u64, i64)>,
    functions: Vec<RawFunction>,
    strings: Vec<&'a [u8]>,
    time_nanos: i64,
    time_seen: bool,
    duration_nanos: i64,
    period_type: Option<(i64, i64)>,
    period: i64,
    comments: Vec<i64>,
    default_sample_type: i64,
}

fn u32_len<T>(v: &[T]) -> u32 {
    // Bounded by Limits::max_entries, which is checked to fit in u32.
    v.len() as u32
}

fn parse_raw<'a>(data: &'a [u8], limits: &Limits) -> Result<Raw<'a>, RawError> {
    let max_entries = limits.max_entries.min(u64::from(u32::MAX) - 1);
    let mut budget = Budget {
        left: max_entries,
        limit: max_entries,
    };
    let mut p = Raw::default();
    // Sample location ids dominate real profiles (about one byte each);
    // reserving avoids repeated regrowth. Untouched capacity costs no memory.
    p.loc_ids.reserve(data.len() / 2);
    let mut r = Reader::new(data, 0);
    let mut n_messages: u64 = 0;
    while !r.at_end() {
        let (field, wt) = r.key()?;
        if matches!(field, 1..=5 | 11) || field == 6 {
            n_messages += 1;
            if n_messages > limits.max_messages {
                return Err(RawError::Limit(DecodeError::TooMany {
                    what: "messages (samples, locations, functions, mappings, strings)",
                    limit: limits.max_messages,
                }));
            }
        }
        match field {
            1 | 11 => {
                r.expect(field, wt, 2)?;
                let (m, base) = r.bytes()?;
                let vt = parse_value_type(m, base)?;
                if field == 1 {
                    p.sample_types.push(vt);
                } else {
                    p.period_type = Some(vt);
                }
            }
            2 => {
                r.expect(field, wt, 2)?;
                let (m, base) = r.bytes()?;
                if p.samples.len() as u64 >= limits.max_samples {
                    return Err(RawError::Limit(DecodeError::TooMany {
                        what: "samples",
                        limit: limits.max_samples,
                    }));
                }
                let s = parse_sample(m, base, &mut p, &mut budget)?;
                p.samples.push(s);
            }
            3 => {
                r.expect(field, wt, 2)?;
                let (m, base) = r.bytes()?;
                p.mappings.push(parse_mapping(m, base)?);
            }
            4 => {
                r.expect(field, wt, 2)?;
                let (m, base) = r.bytes()?;
                let l = parse_location(m, base, &mut p.lines, &mut budget)?;
                p.locations.push(l);
            }
            5 => {
                r.expect(field, wt, 2)?;
                let (m, base) = r.bytes()?;
                p.functions.push(parse_function(m, base)?);
            }
            6 => {
                r.expect(field, wt, 2)?;
                let at = r.off();
                let (s, _) = r.bytes()?;
                if p.strings.is_empty() && !s.is_empty() {
                    return Err(RawError::Wire(format!(
                        "string_table[0] must be empty (byte {at})"
                    )));
                }
                p.strings.push(s);
            }
            7 | 8 | 15 => {
                r.int(field, wt)?;
            }
            9 => {
                if p.time_seen {
                    return Err(RawError::Concatenated);
                }
                p.time_seen = true;
                p.time_nanos = r.int(field, wt)?;
            }
            10 => p.duration_nanos = r.int(field, wt)?,
            12 => p.period = r.int(field, wt)?,
            13 => r.repeated(field, wt, &mut p.comments, |v| v as i64, &mut budget)?,
            14 => p.default_sample_type = r.int(field, wt)?,
            _ => r.skip(wt)?,
        }
    }
    if p.strings.is_empty() {
        return Err(RawError::Wire(
            "no string table (every pprof profile has one starting with \"\")".into(),
        ));
    }
    Ok(p)
}

fn parse_value_type(m: &[u8], base: usize) -> Result<(i64, i64), RawError> {
    let mut r = Reader::new(m, base);
    let (mut t, mut u) = (0, 0);
    while !r.at_end() {
        let (f, wt) = r.key()?;
        match f {
            1 => t = r.int(f, wt)?,
            2 => u = r.int(f, wt)?,
            _ => r.skip(wt)?,
        }
    }
    Ok((t, u))
}

fn parse_sample(
    m: &[u8],
    base: usize,
    p: &mut Raw<'_>,
    budget: &mut Budget,
) -> Result<RawSample, RawError> {
    let mut r = Reader::new(m, base);
    let l0 = u32_len(&p.loc_ids);
    let v0 = u32_len(&p.values);
    let lab0 = u32_len(&p.labels);
    while !r.at_end() {
        let (f, wt) = r.key()?;
        match f {
            1 => r.repeated(f, wt, &mut p.loc_ids, |v| v, budget)?,
            2 => r.repeated(f, wt, &mut p.values, |v| v as i64, budget)?,
            3 => {
                r.expect(f, wt, 2)?;
                budget.take(1)?;
                let (lm, lbase) = r.bytes()?;
                let mut lr = Reader::new(lm, lbase);
                let mut l = RawLabel::default();
                while !lr.at_end() {
                    let (lf, lwt) = lr.key()?;
                    match lf {
                        1 => l.key = lr.int(lf, lwt)?,
                        2 => l.str = lr.int(lf, lwt)?,
                        3 => l.num = lr.int(lf, lwt)?,
                        4 => l.num_unit = lr.int(lf, lwt)?,
                        _ => lr.skip(lwt)?,
                    }
                }
                p.labels.push(l);
            }
            _ => r.skip(wt)?,
        }
    }
    Ok(RawSample {
        locs: (l0, u32_len(&p.loc_ids)),
        values: (v0, u32_len(&p.values)),
        labels: (lab0, u32_len(&p.labels)),
    })
}

fn parse_mapping(m: &[u8], base: usize) -> Result<RawMapping, RawError> {
    let mut r = Reader::new(m, base);
    let mut out = RawMapping::default();
    while !r.at_end() {
        let (f, wt) = r.key()?;
        match f {
            1 => out.id = r.int(f, wt)? as u64,
            2 => out.start = r.int(f, wt)? as u64,
            3 => out.limit = r.int(f, wt)? as u64,
            4 => out.offset = r.int(f, wt)? as u64,
            5 => out.filename = r.int(f, wt)?,
            6 => {
                r.int(f, wt)?;
            }
            7..=10 => {
                r.boolean(f, wt)?;
            }
            _ => r.skip(wt)?,
        }
    }
    Ok(out)
}

fn parse_location(
    m: &[u8],
    base: usize,
    lines: &mut Vec<(u64, i64)>,
    budget: &mut Budget,
) -> Result<RawLocation, RawError> {
    let mut r = Reader::new(m, base);
    let mut out = RawLocation::default();
    let l0 = u32_len(lines);
    while !r.at_end() {
        let (f, wt) = r.key()?;
        match f {
            1 => out.id = r.int(f, wt)? as u64,
            2 => out.mapping_id = r.int(f, wt)? as u64,
            3 => out.address = r.int(f, wt)? as u64,
            4 => {
                r.expect(f, wt, 2)?;
                budget.take(1)?;
                let (lm, lbase) = r.bytes()?;
                let mut lr = Reader::new(lm, lbase);
                let (mut func, mut line) = (0u64, 0i64);
                while !lr.at_end() {
                    let (lf, lwt) = lr.key()?;
                    match lf {
                        1 => func = lr.int(lf, lwt)? as u64,
                        2 => line = lr.int(lf, lwt)?,
                        _ => lr.skip(lwt)?,
                    }
                }
                lines.push((func, line));
            }
            5 => {
                r.boolean(f, wt)?;
            }
            _ => r.skip(wt)?,
        }
    }
    out.lines = (l0, u32_len(lines));
    Ok(out)
}

fn parse_function(m: &[u8], base: usize) -> Result<RawFunction, RawError> {
    let mut r = Reader::new(m, base);
    let mut out = RawFunction::default();
    while !r.at_end() {
        let (f, wt) = r.key()?;
        match f {
            1 => out.id = r.int(f, wt)? as u64,
            2 => out.name = r.int(f, wt)?,
            3 => out.system_name = r.int(f, wt)?,
            4 => out.filename = r.int(f, wt)?,
            5 => {
                r.int(f, wt)?;
            }
            _ => r.skip(wt)?,
        }
    }
    Ok(out)
}

/// Maps pprof ids (u64, 0 reserved) to indexes; dense when ids are small.
enum IdIndex {
    Dense(Vec<u32>),
    Sparse(FxHashMap<u64, u32>),
}

impl IdIndex {
    fn build(ids: impl ExactSizeIterator<Item = u64> + Clone, what: &str) -> Result<Self, String> {
        let n = ids.len();
        let max = ids.clone().max().unwrap_or(0);
        let mut idx = if max <= (n as u64).saturating_mul(4).saturating_add(64) {
            IdIndex::Dense(vec![u32::MAX; max as usize + 1])
        } else {
            IdIndex::Sparse(FxHashMap::with_capacity_and_hasher(n, FxBuild::default()))
        };
        for (i, id) in ids.enumerate() {
            if id == 0 {
                return Err(format!("{what} with reserved id 0"));
            }
            let dup = match &mut idx {
                IdIndex::Dense(v) => {
                    let slot = &mut v[id as usize];
                    let dup = *slot != u32::MAX;
                    *slot = i as u32;
                    dup
                }
                IdIndex::Sparse(m) => m.insert(id, i as u32).is_some(),
            };
            if dup {
                return Err(format!("several {what}s with id {id}"));
            }
        }
        Ok(idx)
    }
    #[inline]
    fn get(&self, id: u64) -> Option<usize> {
        match self {
            IdIndex::Dense(v) => v
                .get(id as usize)
                .copied()
                .filter(|&i| i != u32::MAX)
                .map(|i| i as usize),
            IdIndex::Sparse(m) => m.get(&id).map(|&i| i as usize),
        }
    }
}

struct Strings<'a> {
    table: Vec<&'a [u8]>,
}

impl Strings<'_> {
    fn get(&self, i: i64, what: &dyn std::fmt::Display) -> Result<String, String> {
        match usize::try_from(i).ok().and_then(|i| self.table.get(i)) {
            Some(s) => Ok(String::from_utf8_lossy(s).into_owned()),
            None => Err(format!(
                "{what}: string index {i} out of range (string table has {} entries)",
                self.table.len()
            )),
        }
    }
}

/// Decodes a raw (not gzip'd) pprof protobuf into a [`Profile`].
///
/// Returns `Err(RawError::Wire)` when the bytes are not protobuf, so the
/// caller can try other formats, and a [`DecodeError`] inside
/// `RawError::Limit` for bounds.
pub(crate) fn decode_raw(data: &[u8], limits: &Limits) -> Result<Profile, RawError> {
    let raw = parse_raw(data, limits)?;
    resolve(raw).map_err(|e| RawError::Limit(DecodeError::MalformedPprof(e)))
}

fn resolve(raw: Raw<'_>) -> Result<Profile, String> {
    let strings = Strings { table: raw.strings };
    let vt = |(t, u): (i64, i64), what: &str| -> Result<ValueType, String> {
        Ok(ValueType {
            kind: strings.get(t, &format_args!("{what} type"))?,
            unit: strings.get(u, &format_args!("{what} unit"))?,
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
        .map(|&c| strings.get(c, &"comment"))
        .collect::<Result<Vec<_>, _>>()?;
    let default_sample_type = strings.get(raw.default_sample_type, &"default_sample_type")?;

    // Functions: id -> (name, file).
    let fidx = IdIndex::build(raw.functions.iter().map(|f| f.id), "function")?;
    let mut funcs: Vec<(String, String)> = Vec::with_capacity(raw.functions.len());
    for f in &raw.functions {
        let what = format_args!("function {}", f.id);
        let mut name = strings.get(f.name, &what)?;
        let system = strings.get(f.system_name, &what)?;
        if name.is_empty() {
            name = system;
        }
        funcs.push((name, strings.get(f.filename, &what)?));
    }

    // Mappings.
    let midx = IdIndex::build(raw.mappings.iter().map(|m| m.id), "mapping")?;
    let mut mapping_names = Vec::with_capacity(raw.mappings.len());
    for m in &raw.mappings {
        mapping_names.push(strings.get(m.filename, &format_args!("mapping {}", m.id))?);
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
            let m = &raw.mappings[mi];
            let rel = if m.start <= l.address && l.address < m.limit {
                (l.address - m.start).wrapping_add(m.offset)
            } else {
                l.address
            };
            (mi as u32, rel)
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
        for (k, &(fid, line)) in lines.iter().enumerate() {
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

    // Samples.
    let n_types = sample_types.len();
    let mut samples = Vec::with_capacity(raw.samples.len());
    let mut label_keys: FxHashMap<i64, String> = FxHashMap::default();
    for (si, s) in raw.samples.iter().enumerate() {
        let values = &raw.values[s.values.0 as usize..s.values.1 as usize];
        if values.len() != n_types {
            return Err(format!(
                "sample {si} has {} values but the profile has {n_types} sample types",
                values.len()
            ));
        }
        let ids = &raw.loc_ids[s.locs.0 as usize..s.locs.1 as usize];
        let mut depth = 0usize;
        for &id in ids {
            let li = lidx.get(id).ok_or_else(|| {
                format!("sample {si} refers to location id {id} which does not exist")
            })?;
            let (a, b) = loc_ranges[li];
            depth += (b - a) as usize;
        }
        let mut stack = Vec::with_capacity(depth);
        for &id in ids {
            // Checked in the loop above.
            let (a, b) = loc_ranges[lidx.get(id).unwrap_or_default()];
            stack.extend_from_slice(&loc_frames[a as usize..b as usize]);
        }
        let mut labels = Vec::new();
        for l in &raw.labels[s.labels.0 as usize..s.labels.1 as usize] {
            let key = match label_keys.get(&l.key) {
                Some(k) => k.clone(),
                None => {
                    let k = strings.get(l.key, &format_args!("sample {si} label key"))?;
                    label_keys.insert(l.key, k.clone());
                    k
                }
            };
            if l.str != 0 {
                let v = strings.get(l.str, &format_args!("sample {si} label {key}"))?;
                labels.push((key, LabelValue::Str(v)));
            } else if l.num != 0 || l.num_unit != 0 {
                let unit =
                    strings.get(l.num_unit, &format_args!("sample {si} label {key} unit"))?;
                labels.push((key, LabelValue::Num(l.num, unit)));
            }
        }
        samples.push(Sample {
            stack,
            values: values.to_vec(),
            labels,
        });
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
