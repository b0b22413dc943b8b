//! A hand-written, bounded decoder for raw (uncompressed) pprof protobuf.
//!
//! It does not go through prost for three reasons: it reports the byte
//! offset of a wire-format error, it bounds every repeated field before it
//! allocates (see [`Limits`]), and it keeps the string table as borrowed
//! byte slices so invalid UTF-8 is accepted (replaced lossily) the way
//! `go tool pprof` accepts it. Sample data lands in flat vectors
//! ([`RawProfile`]): no per-sample allocation. [`RawProfile::to_proto`]
//! makes the owned, lossless [`proto::Profile`]; readers with their own
//! model resolve the view directly (the `diff` crate does) and skip the
//! owned copy. [`IdIndex`] maps wire ids to positions.

use crate::hash::{FxBuild, FxHashMap};
use crate::proto;
use crate::{DecodeError, Limits};

/// Why the raw protobuf could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawError {
    /// Wire-format problem: the bytes are not a pprof protobuf (a caller
    /// may try other formats).
    Wire(String),
    /// Decoded, but two `time_nanos` fields: concatenated profiles.
    Concatenated,
    /// A configured bound was exceeded.
    Limit(DecodeError),
}

impl RawError {
    /// The error as a [`DecodeError`] for a caller that reads pprof only.
    pub fn into_decode_error(self) -> DecodeError {
        match self {
            RawError::Wire(w) => DecodeError::NotAProfile(w),
            RawError::Concatenated => DecodeError::MalformedPprof(
                "concatenated profiles detected (time_nanos appears twice)".into(),
            ),
            RawError::Limit(e) => e,
        }
    }
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
        let rest = &self.buf[self.pos..];
        if let Some(head) = rest.get(..10) {
            // Ten bytes left: no bounds check per byte. Nine bytes hold at
            // most 63 bits, so nothing can overflow here; a tenth byte
            // goes to the checked path.
            let mut v = 0u64;
            for (i, &b) in head[..9].iter().enumerate() {
                v |= u64::from(b & 0x7f) << (7 * i);
                if b < 0x80 {
                    self.pos += i + 1;
                    return Ok(v);
                }
            }
        } else if let Some(&b) = rest.first() {
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

/// True when `payload` is a sequence of complete varints of at most 9
/// bytes each (at most 63 bits: none can overflow), the check a packed
/// field needs before [`SampleLocations`] decodes it without checks. A
/// byte scan without decoding; `false` leaves the decision to the checked
/// decoder.
#[inline]
fn packed_varints_are_short(payload: &[u8]) -> bool {
    if payload.last().is_some_and(|&b| b >= 0x80) {
        return false;
    }
    // Eight bytes at a time: the continuation bits of a word gathered into
    // one byte (bit j = byte j), and a run of nine set bits looked for in
    // the sixteen bits of this word and the one before (a run of nine
    // starts in one word and ends in the same or the next). The tail is
    // padded with zeros, which end a run.
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let gather = |w: u64| -> u64 { ((w & HIGH) >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56 };
    let mut prev = 0u64;
    let mut chunks = payload.chunks_exact(8);
    let nine = |bits: u64, prev: &mut u64| -> bool {
        let x = *prev | (bits << 8);
        *prev = bits;
        let a = x & (x >> 1);
        let b = a & (a >> 2);
        let c = b & (b >> 4);
        c & (x >> 8) != 0
    };
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        if nine(gather(w), &mut prev) {
            return false;
        }
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 8];
    tail[..rest.len()].copy_from_slice(rest);
    !nine(gather(u64::from_le_bytes(tail)), &mut prev) && !nine(0, &mut prev)
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

/// A sample: ranges into [`RawProfile`]'s flat vectors. Its location ids
/// are read with [`RawProfile::sample_locations`].
#[derive(Default, Debug, Clone, Copy)]
pub struct RawSample<'a> {
    /// `start..end` in [`RawProfile::loc_ids`] (ids not in `packed_locs`).
    pub locs: (u32, u32),
    /// The location ids as one packed varint field, borrowed from the
    /// input and validated (the usual encoding: kept as bytes, so the
    /// largest array of a profile is never copied); empty when the ids are
    /// in `locs`.
    pub packed_locs: &'a [u8],
    /// `start..end` in [`RawProfile::values`].
    pub values: (u32, u32),
    /// `start..end` in [`RawProfile::labels`].
    pub labels: (u32, u32),
}

/// A label as on the wire (string indexes).
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RawLabel {
    /// Key (string index).
    pub key: i64,
    /// String value (string index, 0 for none).
    pub str: i64,
    /// Numeric value.
    pub num: i64,
    /// Unit of `num` (string index, 0 for none).
    pub num_unit: i64,
}

/// A mapping as on the wire.
#[derive(Default, Debug, Clone, Copy)]
pub struct RawMapping {
    /// Id (non-zero).
    pub id: u64,
    /// Start address.
    pub start: u64,
    /// Limit address (exclusive).
    pub limit: u64,
    /// File offset of `start`.
    pub offset: u64,
    /// File name (string index).
    pub filename: i64,
    /// Build id (string index).
    pub build_id: i64,
    /// `has_functions`, `has_filenames`, `has_line_numbers`, `has_inline_frames`.
    pub flags: [bool; 4],
}

impl RawMapping {
    /// `address` as an offset into the mapped file when the mapping holds
    /// it (what symbolizers key on across runs), else unchanged.
    #[inline]
    pub fn file_address(&self, address: u64) -> u64 {
        if self.start <= address && address < self.limit {
            (address - self.start).wrapping_add(self.offset)
        } else {
            address
        }
    }
}

/// A location as on the wire.
#[derive(Default, Debug, Clone, Copy)]
pub struct RawLocation {
    /// Id (non-zero).
    pub id: u64,
    /// Mapping id (0: none).
    pub mapping_id: u64,
    /// Address.
    pub address: u64,
    /// `start..end` in [`RawProfile::lines`].
    pub lines: (u32, u32),
    /// `is_folded`.
    pub is_folded: bool,
}

/// A location line as on the wire.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RawLine {
    /// Function id.
    pub function_id: u64,
    /// Line number.
    pub line: i64,
    /// Column.
    pub column: i64,
}

/// A function as on the wire.
#[derive(Default, Debug, Clone, Copy)]
pub struct RawFunction {
    /// Id (non-zero).
    pub id: u64,
    /// Name (string index).
    pub name: i64,
    /// System (mangled) name (string index).
    pub system_name: i64,
    /// Source file (string index).
    pub filename: i64,
    /// First line of the function.
    pub start_line: i64,
}

/// A decoded profile borrowing its strings from the input: every field of
/// the message, repeated fields in flat vectors indexed by ranges.
#[derive(Default, Debug)]
pub struct RawProfile<'a> {
    /// Sample types as (type, unit) string indexes.
    pub sample_types: Vec<(i64, i64)>,
    /// Samples.
    pub samples: Vec<RawSample<'a>>,
    /// Location ids of samples not written as one packed field, leaf first.
    pub loc_ids: Vec<u64>,
    /// Values of every sample.
    pub values: Vec<i64>,
    /// Labels of every sample.
    pub labels: Vec<RawLabel>,
    /// Mappings.
    pub mappings: Vec<RawMapping>,
    /// Locations.
    pub locations: Vec<RawLocation>,
    /// Lines of every location, innermost first.
    pub lines: Vec<RawLine>,
    /// Functions.
    pub functions: Vec<RawFunction>,
    /// The string table, as bytes (may be invalid UTF-8).
    pub strings: Vec<&'a [u8]>,
    /// `drop_frames` (string index).
    pub drop_frames: i64,
    /// `keep_frames` (string index).
    pub keep_frames: i64,
    /// `time_nanos`.
    pub time_nanos: i64,
    time_seen: bool,
    /// `duration_nanos`.
    pub duration_nanos: i64,
    /// Period type as (type, unit) string indexes.
    pub period_type: Option<(i64, i64)>,
    /// `period`.
    pub period: i64,
    /// Comments (string indexes).
    pub comments: Vec<i64>,
    /// `default_sample_type` (string index).
    pub default_sample_type: i64,
    /// `doc_url` (string index).
    pub doc_url: i64,
}

/// Parses raw (not gzip'd) protobuf into a [`RawProfile`], bounded by
/// `limits` (samples, messages, repeated entries; the caller checks the
/// input and decompressed sizes). Only the wire format and the limits are
/// checked here; references between messages are not.
pub fn parse<'a>(data: &'a [u8], limits: &Limits) -> Result<RawProfile<'a>, RawError> {
    let max_entries = limits.max_entries.min(u64::from(u32::MAX) - 1);
    let mut budget = Budget {
        left: max_entries,
        limit: max_entries,
    };
    let mut p = RawProfile::default();
    presize(&mut p, data, limits);
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
            7 => p.drop_frames = r.int(field, wt)?,
            8 => p.keep_frames = r.int(field, wt)?,
            15 => p.doc_url = r.int(field, wt)?,
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

/// Reserves the flat vectors at their final sizes, counted by a quick
/// pass over the top-level fields (keys and lengths only), so that they
/// are not grown and copied while parsing. The counts are capped by the
/// limits; anything the pass cannot read is left to [`parse`] to report.
fn presize(p: &mut RawProfile<'_>, data: &[u8], limits: &Limits) {
    let mut r = Reader::new(data, 0);
    // sample types, samples, mappings, locations, functions, strings
    let mut n = [0usize; 7];
    while !r.at_end() {
        let Ok((field, wt)) = r.key() else { break };
        if wt == 2 {
            if r.bytes().is_err() {
                break;
            }
            if let Some(c) = n.get_mut(field as usize) {
                *c += 1;
            }
        } else if r.skip(wt).is_err() {
            break;
        }
    }
    // Every entry takes at least one byte of input, so no vector is
    // reserved beyond the input's size (a hostile count stays cheap).
    let cap = |x: usize| {
        x.min(limits.max_messages.min(1 << 26) as usize)
            .min(data.len())
    };
    let samples = cap(n[2]).min(limits.max_samples as usize);
    p.sample_types.reserve(cap(n[1]));
    p.samples.reserve(samples);
    p.values.reserve(cap(samples.saturating_mul(n[1].max(1))));
    p.mappings.reserve(cap(n[3]));
    p.locations.reserve(cap(n[4]));
    // Most locations have one line (Go's inlined calls add a few).
    p.lines.reserve(cap(n[4] + n[4] / 4));
    p.functions.reserve(cap(n[5]));
    p.strings.reserve(cap(n[6]));
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

fn parse_sample<'a>(
    m: &'a [u8],
    base: usize,
    p: &mut RawProfile<'a>,
    budget: &mut Budget,
) -> Result<RawSample<'a>, RawError> {
    let mut r = Reader::new(m, base);
    let l0 = u32_len(&p.loc_ids);
    let v0 = u32_len(&p.values);
    let lab0 = u32_len(&p.labels);
    let mut packed: Option<&'a [u8]> = None;
    while !r.at_end() {
        let (f, wt) = r.key()?;
        match f {
            1 if wt == 2 && packed.is_none() && u32_len(&p.loc_ids) == l0 => {
                let (payload, pbase) = r.bytes()?;
                // Each varint is at least one byte: this bounds the count.
                budget.take(payload.len() as u64)?;
                if !packed_varints_are_short(payload) {
                    // Rare: a varint of 10 bytes or more, or a truncated
                    // one; the checked decoder accepts or names it.
                    let mut pr = Reader::new(payload, pbase);
                    while !pr.at_end() {
                        pr.varint()?;
                    }
                }
                packed = Some(payload);
            }
            1 => {
                // A second field for the same ids (rare): unpack both.
                if let Some(pk) = packed.take() {
                    let mut pr = Reader::new(pk, 0);
                    while !pr.at_end() {
                        p.loc_ids.push(pr.varint()?);
                    }
                }
                r.repeated(f, wt, &mut p.loc_ids, |v| v, budget)?
            }
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
        packed_locs: packed.unwrap_or_default(),
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
            6 => out.build_id = r.int(f, wt)?,
            7..=10 => out.flags[f as usize - 7] = r.boolean(f, wt)?,
            _ => r.skip(wt)?,
        }
    }
    Ok(out)
}

fn parse_location(
    m: &[u8],
    base: usize,
    lines: &mut Vec<RawLine>,
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
                let mut line = RawLine::default();
                while !lr.at_end() {
                    let (lf, lwt) = lr.key()?;
                    match lf {
                        1 => line.function_id = lr.int(lf, lwt)? as u64,
                        2 => line.line = lr.int(lf, lwt)?,
                        3 => line.column = lr.int(lf, lwt)?,
                        _ => lr.skip(lwt)?,
                    }
                }
                lines.push(line);
            }
            5 => out.is_folded = r.boolean(f, wt)?,
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
            5 => out.start_line = r.int(f, wt)?,
            _ => r.skip(wt)?,
        }
    }
    Ok(out)
}

/// Maps pprof ids (u64, 0 reserved) to indexes; dense when ids are small.
pub enum IdIndex {
    /// `ids[id]` is the index, `u32::MAX` for none.
    Dense(Vec<u32>),
    /// A hash map from id to index.
    Sparse(FxHashMap<u64, u32>),
}

impl IdIndex {
    /// Indexes `ids` by position; an id 0 or a repeated id is an error
    /// (`what` names the message in it).
    pub fn build(
        ids: impl ExactSizeIterator<Item = u64> + Clone,
        what: &str,
    ) -> Result<Self, String> {
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
    /// The index of `id`, if it was indexed.
    #[inline]
    pub fn get(&self, id: u64) -> Option<usize> {
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

/// The ids of a packed varint field that the decoder validated, such as
/// [`RawSample::packed_locs`]: whole varints of at most nine bytes, so
/// none runs past the end and none overflows.
#[derive(Debug, Clone)]
pub struct PackedIds<'r> {
    buf: &'r [u8],
    pos: usize,
}

impl<'r> PackedIds<'r> {
    /// The ids in `buf`, a packed field the decoder validated.
    #[inline]
    pub fn new(buf: &'r [u8]) -> Self {
        PackedIds { buf, pos: 0 }
    }
}

impl Iterator for PackedIds<'_> {
    type Item = u64;
    #[inline]
    fn next(&mut self) -> Option<u64> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let mut v = 0u64;
        let mut shift = 0u32;
        loop {
            // Validated: the last byte of the field ends a varint.
            let b = self.buf[self.pos];
            self.pos += 1;
            v |= u64::from(b & 0x7f).wrapping_shl(shift);
            if b < 0x80 {
                return Some(v);
            }
            shift += 7;
        }
    }
}

/// The location ids of a sample ([`RawProfile::sample_locations`]).
#[derive(Debug, Clone)]
pub enum SampleLocations<'r> {
    /// Decoding a validated packed field.
    Packed(PackedIds<'r>),
    /// From [`RawProfile::loc_ids`].
    Unpacked(std::slice::Iter<'r, u64>),
}

impl Iterator for SampleLocations<'_> {
    type Item = u64;
    #[inline]
    fn next(&mut self) -> Option<u64> {
        match self {
            SampleLocations::Packed(ids) => ids.next(),
            SampleLocations::Unpacked(it) => it.next().copied(),
        }
    }
}

impl<'a> RawProfile<'a> {
    /// The location ids of `s` (a sample of this profile), leaf first.
    pub fn sample_locations<'r>(&'r self, s: &RawSample<'a>) -> SampleLocations<'r> {
        if s.packed_locs.is_empty() {
            SampleLocations::Unpacked(self.loc_ids[s.locs.0 as usize..s.locs.1 as usize].iter())
        } else {
            SampleLocations::Packed(PackedIds::new(s.packed_locs))
        }
    }

    /// The string at `index` (lossy UTF-8), or an error naming `what`.
    pub fn string(&self, index: i64, what: &dyn std::fmt::Display) -> Result<String, String> {
        self.str_bytes(index, what).map(lossy_string)
    }

    /// The bytes of string `index`, or an error naming `what`.
    pub fn str_bytes(&self, index: i64, what: &dyn std::fmt::Display) -> Result<&[u8], String> {
        match usize::try_from(index)
            .ok()
            .and_then(|i| self.strings.get(i))
        {
            Some(s) => Ok(s),
            None => Err(format!(
                "{what}: string index {index} out of range (string table has {} entries)",
                self.strings.len()
            )),
        }
    }

    /// The owned, lossless profile: every field and id as decoded, strings
    /// made valid UTF-8 (invalid sequences replaced, as `go tool pprof`
    /// shows them).
    pub fn to_proto(&self) -> proto::Profile {
        let vt = |&(t, u): &(i64, i64)| proto::ValueType { r#type: t, unit: u };
        proto::Profile {
            sample_type: self.sample_types.iter().map(vt).collect(),
            sample: self
                .samples
                .iter()
                .map(|s| proto::Sample {
                    location_id: self.sample_locations(s).collect(),
                    value: self.values[s.values.0 as usize..s.values.1 as usize].to_vec(),
                    label: self.labels[s.labels.0 as usize..s.labels.1 as usize]
                        .iter()
                        .map(|l| proto::Label {
                            key: l.key,
                            str: l.str,
                            num: l.num,
                            num_unit: l.num_unit,
                        })
                        .collect(),
                })
                .collect(),
            mapping: self
                .mappings
                .iter()
                .map(|m| proto::Mapping {
                    id: m.id,
                    memory_start: m.start,
                    memory_limit: m.limit,
                    file_offset: m.offset,
                    filename: m.filename,
                    build_id: m.build_id,
                    has_functions: m.flags[0],
                    has_filenames: m.flags[1],
                    has_line_numbers: m.flags[2],
                    has_inline_frames: m.flags[3],
                })
                .collect(),
            location: self
                .locations
                .iter()
                .map(|l| proto::Location {
                    id: l.id,
                    mapping_id: l.mapping_id,
                    address: l.address,
                    line: self.lines[l.lines.0 as usize..l.lines.1 as usize]
                        .iter()
                        .map(|ln| proto::Line {
                            function_id: ln.function_id,
                            line: ln.line,
                            column: ln.column,
                        })
                        .collect(),
                    is_folded: l.is_folded,
                })
                .collect(),
            function: self
                .functions
                .iter()
                .map(|f| proto::Function {
                    id: f.id,
                    name: f.name,
                    system_name: f.system_name,
                    filename: f.filename,
                    start_line: f.start_line,
                })
                .collect(),
            string_table: self.strings.iter().map(|s| lossy_string(s)).collect(),
            drop_frames: self.drop_frames,
            keep_frames: self.keep_frames,
            time_nanos: self.time_nanos,
            duration_nanos: self.duration_nanos,
            period_type: self.period_type.as_ref().map(vt),
            period: self.period,
            comment: self.comments.clone(),
            default_sample_type: self.default_sample_type,
            doc_url: self.doc_url,
        }
    }
}

/// `bytes` as a string, invalid UTF-8 replaced: the same result as
/// `String::from_utf8_lossy`, with the faster whole-string validation
/// first (nearly every string is valid).
fn lossy_string(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// Length of a flat vector as a range bound.
pub fn u32_len<T>(v: &[T]) -> u32 {
    // Bounded by Limits::max_entries, which is checked to fit in u32.
    v.len() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// Every varint length decodes alike with and without ten bytes left
    /// (the unchecked and the checked path), and the packed-field check
    /// passes exactly the payloads of complete varints of at most 9 bytes.
    #[test]
    fn varints_of_every_length_on_both_paths() {
        let mut values: Vec<u64> = vec![0, 1, 127, 128, 300, 16383, 16384, u64::MAX];
        for bits in 1..64 {
            values.extend([(1u64 << bits) - 1, 1u64 << bits, (1u64 << bits) + 1]);
        }
        for &v in &values {
            let mut one = Vec::new();
            encode(v, &mut one);
            let len = one.len();
            assert_eq!(packed_varints_are_short(&one), len <= 9, "{v}");
            for tail in [0usize, 1, 9, 12] {
                let mut buf = one.clone();
                buf.extend(std::iter::repeat_n(0x81u8, tail));
                let mut r = Reader::new(&buf, 0);
                assert_eq!(r.varint(), Ok(v), "{v} + {tail}");
                assert_eq!(r.pos, len, "{v} + {tail}");
            }
            let mut it = SampleLocations::Packed(PackedIds::new(&one));
            assert_eq!((it.next(), it.next()), (Some(v), None));
        }
        // Truncated, overlong and overflowing varints: errors on both paths.
        for bad in [
            &[0x80u8][..],
            &[0xff; 11][..],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
        ] {
            assert!(!packed_varints_are_short(bad));
            let mut padded = bad.to_vec();
            padded.extend([0u8; 12]);
            for buf in [bad, &padded[..]] {
                let r = Reader::new(buf, 0).varint();
                if buf.len() > bad.len() && bad.len() == 1 {
                    // 0x80 0x00: a (non-minimal) zero, as protobuf allows.
                    assert_eq!(r, Ok(0));
                } else {
                    assert!(r.is_err(), "{buf:?}");
                }
            }
        }
    }

    /// The word-at-a-time packed-field check agrees with a byte scan (the
    /// longest run of continuation bytes at most eight, the last byte
    /// final) on every placement of runs of 7 to 10 continuation bytes in
    /// payloads of 1 to 40 bytes, and on pseudo-random payloads.
    #[test]
    fn packed_check_matches_a_byte_scan() {
        let slow = |p: &[u8]| {
            let mut run = 0u32;
            let mut longest = 0u32;
            for &b in p {
                run = if b >= 0x80 { run + 1 } else { 0 };
                longest = longest.max(run);
            }
            p.last().is_none_or(|&b| b < 0x80) && longest <= 8
        };
        for len in 1..=40usize {
            for run in 7..=10usize {
                for start in 0..len {
                    let mut p = vec![0x05u8; len];
                    for b in p.iter_mut().skip(start).take(run) {
                        *b = 0x85;
                    }
                    assert_eq!(
                        packed_varints_are_short(&p),
                        slow(&p),
                        "{len} {run} {start}"
                    );
                }
            }
        }
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 64) as usize;
            let p: Vec<u8> = (0..len)
                .map(|i| {
                    let r = x.rotate_left(i as u32 * 5);
                    if r.is_multiple_of(7) {
                        0x01
                    } else {
                        0x80 | (r as u8)
                    }
                })
                .collect();
            assert_eq!(packed_varints_are_short(&p), slow(&p), "{p:?}");
        }
    }
}
