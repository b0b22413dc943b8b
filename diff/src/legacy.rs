//! Readers for the legacy (pre-protobuf) profile formats that
//! `go tool pprof` still accepts, following google/pprof's
//! `profile/legacy_profile.go` and `legacy_java_profile.go` (as vendored in
//! Go 1.23) so that sample values and totals match it exactly:
//!
//! - binary CPU profiles (gperftools / Go before 1.9): a header of words
//!   `0, 3, 0|1, period_us, 0` in 32- or 64-bit, little or big endian, then
//!   `count, depth, pcs...` records, an end marker `0, 1, 0`, then the
//!   `/proc/self/maps` text. Java binary CPU profiles (`3rd word = 1`) are
//!   followed by an address-to-symbol table instead. Values are
//!   `[count, count * period_ns]`; like pprof, a second frame common to
//!   (almost) all samples is stripped as a signal-handler artifact (at most
//!   twice) and a duplicated leaf is removed.
//! - text heap profiles (`heap profile: ...` from gperftools heapz, Go's
//!   `debug=1` heap, growthz, fragmentationz): `heap_v2`/`heapz_v2` and Go's
//!   `heap` samples are un-sampled with pprof's Poisson scaling
//!   (`1 / (1 - exp(-avg/rate))`), Go's rate being half the header value as
//!   pprof does.
//! - Go count profiles (`goroutine profile: total N`, `threadcreate ...`).
//! - threadz (`--- threadz`, `--- Thread ... stack: ---`).
//! - contention (`--- contentionz `, `--- mutex:`, `--- contention:`), with
//!   cycles scaled to nanoseconds by `cycles/second` and `sampling period`.
//! - Java heapz / contentionz text (`--- heapz 1 ---`, `--- contentionz 1 ---`).
//!
//! Addresses are adjusted by -1 (except the leaf, where pprof does so) to
//! land on the call instruction. Frames are unsymbolized: their function is
//! the hex address `0x...` (Java profiles carry symbols and use them). The
//! memory map is read for mapping names and mapping-relative addresses;
//! pprof's mapping-massaging heuristics (merging adjacent entries, moving the
//! main binary first) do not change any value and are not reproduced. The
//! `drop_frames` regexes pprof attaches to legacy profiles are not applied
//! (they only affect how pprof prunes stacks for display).

use std::collections::HashMap;
use std::sync::OnceLock;

use regex::Regex;

use crate::error::DecodeError;
use crate::profile::{Frame, FrameId, LabelValue, Profile, Sample, ValueType};

/// A legacy reader's verdict.
#[derive(Debug)]
pub(crate) enum LegacyError {
    /// Not this format: try the next reader.
    Unrecognized,
    /// This format, but broken.
    Malformed(&'static str, String),
}

type LResult<T> = Result<T, LegacyError>;

fn malformed<T>(format: &'static str, detail: impl Into<String>) -> LResult<T> {
    Err(LegacyError::Malformed(format, detail.into()))
}

#[derive(Default)]
struct Legacy {
    sample_types: Vec<ValueType>,
    period_type: Option<ValueType>,
    period: i64,
    duration_nanos: i64,
    samples: Vec<LSample>,
    mappings: Vec<LMapping>,
    /// Java symbols: address -> (function, file, line).
    symbols: HashMap<u64, (String, String, i64)>,
}

struct LSample {
    addrs: Vec<u64>,
    values: Vec<i64>,
    labels: Vec<(String, LabelValue)>,
}

struct LMapping {
    start: u64,
    limit: u64,
    offset: u64,
    file: String,
}

fn vt(kind: &str, unit: &str) -> ValueType {
    ValueType {
        kind: kind.into(),
        unit: unit.into(),
    }
}

/// Tries every legacy reader in pprof's order.
pub(crate) fn parse(data: &[u8]) -> Result<Option<Profile>, DecodeError> {
    let text = String::from_utf8_lossy(data);
    let attempts: [&dyn Fn() -> LResult<Legacy>; 6] = [
        &|| parse_cpu(data),
        &|| parse_heap(&text),
        &|| parse_go_count(&text),
        &|| parse_thread(&text),
        &|| parse_contention(&text),
        &|| parse_java_profile(&text),
    ];
    for attempt in attempts {
        match attempt() {
            Ok(l) => {
                if l.sample_types.is_empty() && !l.samples.is_empty() {
                    return Err(DecodeError::MalformedLegacy {
                        format: "legacy",
                        detail: "missing sample type information".into(),
                    });
                }
                return Ok(Some(l.into_profile()));
            }
            Err(LegacyError::Unrecognized) => continue,
            Err(LegacyError::Malformed(format, detail)) => {
                return Err(DecodeError::MalformedLegacy { format, detail })
            }
        }
    }
    Ok(None)
}

impl Legacy {
    fn into_profile(mut self) -> Profile {
        self.mappings.sort_by_key(|m| m.start);
        let mut frames: Vec<Frame> = Vec::new();
        let mut by_addr: HashMap<u64, FrameId> = HashMap::new();
        let mut samples = Vec::with_capacity(self.samples.len());
        for s in self.samples {
            let mut stack = Vec::with_capacity(s.addrs.len());
            for a in s.addrs {
                let id = *by_addr.entry(a).or_insert_with(|| {
                    let m = find_mapping(&self.mappings, a);
                    let (function, file, line) = match self.symbols.get(&a) {
                        Some((f, file, l)) => (f.clone(), file.clone(), *l),
                        None => (format!("0x{a:x}"), String::new(), 0),
                    };
                    frames.push(Frame {
                        function,
                        file,
                        line,
                        inlined: false,
                        kind: Default::default(),
                        mapping: m.map(|m| m.file.clone()).unwrap_or_default(),
                        address: m.map_or(a, |m| (a - m.start).wrapping_add(m.offset)),
                    });
                    (frames.len() - 1) as FrameId
                });
                stack.push(id);
            }
            samples.push(Sample {
                stack,
                values: s.values,
                labels: s.labels,
            });
        }
        Profile {
            sample_types: self.sample_types,
            default_sample_type: None,
            period_type: self.period_type,
            period: self.period,
            time_nanos: 0,
            duration_nanos: self.duration_nanos,
            comments: Vec::new(),
            frames,
            samples,
        }
    }
}

fn find_mapping(maps: &[LMapping], a: u64) -> Option<&LMapping> {
    let i = maps.partition_point(|m| m.start <= a);
    let m = maps.get(i.checked_sub(1)?)?;
    (a < m.limit).then_some(m)
}

macro_rules! re {
    ($name:ident, $pat:expr) => {
        fn $name() -> &'static Regex {
            static R: OnceLock<Regex> = OnceLock::new();
            R.get_or_init(|| Regex::new($pat).expect("valid regex"))
        }
    };
}

re!(count_start_re, r"\A(\S+) profile: total \d+\z");
re!(count_re, r"\A(\d+) @(( 0x[0-9a-f]+)+)\z");
re!(
    heap_header_re,
    r"heap profile: *(\d+): *(\d+) *\[ *(\d+): *(\d+) *\] *@ *(heap[_a-z0-9]*)/?(\d*)"
);
re!(
    heap_sample_re,
    r"(-?\d+): *(-?\d+) *\[ *(\d+): *(\d+) *] @([ x0-9a-f]*)"
);
re!(contention_sample_re, r"(\d+) *(\d+) @([ x0-9a-f]*)");
re!(hex_number_re, r"0x[0-9a-f]+");
re!(
    growth_header_re,
    r"heap profile: *(\d+): *(\d+) *\[ *(\d+): *(\d+) *\] @ growthz?"
);
re!(
    fragmentation_header_re,
    r"heap profile: *(\d+): *(\d+) *\[ *(\d+): *(\d+) *\] @ fragmentationz?"
);
re!(threadz_start_re, r"--- threadz \d+ ---");
re!(
    thread_start_re,
    r"--- Thread ([[:xdigit:]]+) \(name: (.*)/(\d+)\) stack: ---"
);
re!(
    proc_maps_re,
    r"^\s*(?:0x)?([[:xdigit:]]+)[\s-]?\s*(?:0x)?([[:xdigit:]]+):?(?:\s+([-rwxp]+))?(?:\s+([[:xdigit:]]+))?\s+[[:xdigit:]]+:[[:xdigit:]]+\s+[[:digit:]]+(?:\s+(\S+))?"
);
re!(
    brief_maps_re,
    r"^\s*(?:0x)?([[:xdigit:]]+)[\s-]?\s*(?:0x)?([[:xdigit:]]+):?(?:\s+([-rwxp]+))?(?:\s+(\S+))?(?:\s+\(@([[:xdigit:]]+)\))?(?:\s+([[:xdigit:]]+))?"
);
re!(log_info_re, r"^[^\[\]]+:[0-9]+]\s");
re!(java_attribute_re, r"([\w ]+)=([\w ]+)");
re!(java_sample_re, r" *(\d+) +(\d+) +@ +([ x0-9a-f]*)");
re!(java_location_re, r"^\s*0x([[:xdigit:]]+)\s+(.*)\s*$");
re!(
    java_location_file_line_re,
    r"^(.*)\s+\((.+):(-?[[:digit:]]+)\)$"
);
re!(java_location_path_re, r"^(.*)\s+\((.*)\)$");

fn is_space_or_comment(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

fn is_memory_map_sentinel(line: &str) -> bool {
    line.contains("--- Memory map: ---") || line.contains("MAPPED_LIBRARIES:")
}

/// Go's `strconv.ParseInt(s, 0, 64)`: `0x` hex, `0o`/leading-0 octal, `0b`, else decimal.
fn parse_int_base0(s: &str) -> Option<i64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (radix, digits) = if let Some(h) = body.strip_prefix("0x").or(body.strip_prefix("0X")) {
        (16, h)
    } else if let Some(b) = body.strip_prefix("0b").or(body.strip_prefix("0B")) {
        (2, b)
    } else if let Some(o) = body.strip_prefix("0o").or(body.strip_prefix("0O")) {
        (8, o)
    } else if body.len() > 1 && body.starts_with('0') {
        (8, &body[1..])
    } else {
        (10, body)
    };
    let digits = digits.replace('_', "");
    let v = i128::from_str_radix(&digits, radix).ok()?;
    let v = if neg { -v } else { v };
    i64::try_from(v).ok()
}

fn parse_hex_addresses(s: &str) -> Result<Vec<u64>, String> {
    hex_number_re()
        .find_iter(s)
        .map(|m| {
            u64::from_str_radix(&m.as_str()[2..], 16)
                .map_err(|_| format!("failed to parse as hex 64-bit number: {}", m.as_str()))
        })
        .collect()
}

/// A line cursor mimicking Go's `bufio.Scanner` over lines.
struct Lines<'a> {
    it: std::str::Lines<'a>,
    cur: &'a str,
}

impl<'a> Lines<'a> {
    fn new(s: &'a str) -> Self {
        Lines {
            it: s.lines(),
            cur: "",
        }
    }
    fn scan(&mut self) -> bool {
        match self.it.next() {
            Some(l) => {
                self.cur = l;
                true
            }
            None => {
                self.cur = "";
                false
            }
        }
    }
    fn text(&self) -> &'a str {
        self.cur
    }
}

// ---------------------------------------------------------------- CPU ----

type WordFn = fn(&[u8]) -> Option<(u64, &[u8])>;

fn get32l(b: &[u8]) -> Option<(u64, &[u8])> {
    Some((
        u64::from(u32::from_le_bytes(b.get(..4)?.try_into().ok()?)),
        &b[4..],
    ))
}
fn get32b(b: &[u8]) -> Option<(u64, &[u8])> {
    Some((
        u64::from(u32::from_be_bytes(b.get(..4)?.try_into().ok()?)),
        &b[4..],
    ))
}
fn get64l(b: &[u8]) -> Option<(u64, &[u8])> {
    Some((u64::from_le_bytes(b.get(..8)?.try_into().ok()?), &b[8..]))
}
fn get64b(b: &[u8]) -> Option<(u64, &[u8])> {
    Some((u64::from_be_bytes(b.get(..8)?.try_into().ok()?), &b[8..]))
}

fn parse_cpu(b: &[u8]) -> LResult<Legacy> {
    for parse in [get32l as WordFn, get32b, get64l, get64b] {
        let mut rest = b;
        let mut n = [0u64; 5];
        let mut ok = true;
        for slot in &mut n {
            match parse(rest) {
                Some((v, r)) => {
                    *slot = v;
                    rest = r;
                }
                None => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok || n[0] != 0 || n[1] != 3 || n[3] == 0 || n[4] != 0 {
            continue;
        }
        match n[2] {
            0 => return cpu_profile(rest, n[3] as i64, parse),
            1 => return java_cpu_profile(rest, n[3] as i64, parse),
            _ => continue,
        }
    }
    Err(LegacyError::Unrecognized)
}

fn new_cpu_legacy(period_us: i64) -> Legacy {
    Legacy {
        period: period_us.wrapping_mul(1000),
        period_type: Some(vt("cpu", "nanoseconds")),
        sample_types: vec![vt("samples", "count"), vt("cpu", "nanoseconds")],
        ..Default::default()
    }
}

/// pprof's `parseCPUSamples`; returns the bytes after the samples.
fn parse_cpu_samples<'a>(
    mut b: &'a [u8],
    parse: WordFn,
    adjust: bool,
    p: &mut Legacy,
) -> LResult<&'a [u8]> {
    while !b.is_empty() {
        let Some((count, r)) = parse(b) else {
            return Err(LegacyError::Unrecognized);
        };
        let Some((nstk, r)) = parse(r) else {
            return Err(LegacyError::Unrecognized);
        };
        b = r;
        if nstk > (b.len() / 4) as u64 {
            return Err(LegacyError::Unrecognized);
        }
        let mut addrs = Vec::with_capacity(nstk as usize);
        for _ in 0..nstk {
            match parse(b) {
                Some((a, r)) => {
                    addrs.push(a);
                    b = r;
                }
                None => {
                    // Go's reader yields 0 and a nil rest here.
                    addrs.push(0);
                    b = &[];
                }
            }
        }
        if count == 0 && nstk == 1 && addrs[0] == 0 {
            break; // end-of-data marker
        }
        if adjust {
            for a in addrs.iter_mut().skip(1) {
                *a = a.wrapping_sub(1);
            }
        }
        let count = count as i64;
        p.samples.push(LSample {
            addrs,
            values: vec![count, count.wrapping_mul(p.period)],
            labels: Vec::new(),
        });
    }
    Ok(b)
}

fn cpu_profile(b: &[u8], period_us: i64, parse: WordFn) -> LResult<Legacy> {
    let mut p = new_cpu_legacy(period_us);
    let rest = parse_cpu_samples(b, parse, true, &mut p)?;

    // Strip a second frame shared by (almost) all samples: a signal
    // handler artifact. At most twice; one different sample allowed per 32.
    let margin = p.samples.len() / 32;
    for _ in 0..2 {
        let mut addr1: HashMap<u64, usize> = HashMap::new();
        for s in &p.samples {
            if s.addrs.len() > 1 {
                *addr1.entry(s.addrs[1]).or_default() += 1;
            }
        }
        // Iterate in a fixed order; at most one address can qualify unless
        // there are fewer than two samples, where pprof's choice is random.
        let mut cands: Vec<_> = addr1.into_iter().collect();
        cands.sort_unstable();
        if let Some(&(id1, _)) = cands.iter().find(|&&(_, c)| c >= p.samples.len() - margin) {
            for s in &mut p.samples {
                if s.addrs.len() > 1 && s.addrs[1] == id1 {
                    s.addrs.remove(1);
                }
            }
        }
    }
    p.mappings = parse_memory_map(&String::from_utf8_lossy(rest));
    cleanup_duplicate_locations(&mut p);
    Ok(p)
}

fn cleanup_duplicate_locations(p: &mut Legacy) {
    for s in &mut p.samples {
        if s.addrs.len() > 1 && s.addrs[0] == s.addrs[1].wrapping_add(1) {
            s.addrs.remove(1);
        }
    }
}

fn java_cpu_profile(b: &[u8], period_us: i64, parse: WordFn) -> LResult<Legacy> {
    let mut p = new_cpu_legacy(period_us);
    let rest = parse_cpu_samples(b, parse, false, &mut p)?;
    parse_java_locations(&String::from_utf8_lossy(rest), &mut p)?;
    Ok(p)
}

// --------------------------------------------------------------- maps ----

/// Parses `/proc/self/maps`-like text; keeps executable entries.
fn parse_memory_map(text: &str) -> Vec<LMapping> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = match log_info_re().find(line) {
            Some(m) => &line[m.end()..],
            None => line,
        };
        let (start, end, perm, offset, file) = if let Some(c) = proc_maps_re().captures(line) {
            (
                c.get(1),
                c.get(2),
                c.get(3),
                c.get(4).map(|m| m.as_str()),
                c.get(5).map(|m| m.as_str()),
            )
        } else if let Some(c) = brief_maps_re().captures(line) {
            (
                c.get(1),
                c.get(2),
                c.get(3),
                c.get(5).map(|m| m.as_str()),
                c.get(4).map(|m| m.as_str()),
            )
        } else {
            continue;
        };
        if let Some(perm) = perm {
            if !perm.as_str().contains('x') {
                continue;
            }
        }
        let (Some(start), Some(end)) = (start, end) else {
            continue;
        };
        let (Ok(start), Ok(limit)) = (
            u64::from_str_radix(start.as_str(), 16),
            u64::from_str_radix(end.as_str(), 16),
        ) else {
            continue;
        };
        let offset = offset
            .and_then(|o| u64::from_str_radix(o, 16).ok())
            .unwrap_or(0);
        out.push(LMapping {
            start,
            limit,
            offset,
            file: file.unwrap_or_default().to_owned(),
        });
    }
    out
}

/// Skips to the memory map sentinel (if not on it) and parses what follows.
fn parse_additional_sections(s: &mut Lines<'_>, p: &mut Legacy) {
    while !is_memory_map_sentinel(s.text()) && s.scan() {}
    let rest: Vec<&str> = std::iter::from_fn(|| s.scan().then(|| s.text())).collect();
    p.mappings = parse_memory_map(&rest.join("\n"));
}

// --------------------------------------------------------------- heap ----

const HEAP: &str = "legacy heap";

fn parse_heap(text: &str) -> LResult<Legacy> {
    let mut s = Lines::new(text);
    if !s.scan() {
        return Err(LegacyError::Unrecognized);
    }
    let line = s.text();
    let mut p = Legacy {
        period_type: Some(vt("space", "bytes")),
        ..Default::default()
    };
    let mut sampling_v2 = false;
    let mut has_alloc = false;
    if let Some(h) = heap_header_re().captures(line) {
        let mut period: i64 = 0;
        if !h[6].is_empty() {
            period = h[6].parse().map_err(|_| LegacyError::Unrecognized)?;
        }
        if (h[3] != h[1] && &h[3] != "0") || (h[4] != h[2] && &h[4] != "0") {
            has_alloc = true;
        }
        match &h[5] {
            "heapz_v2" | "heap_v2" => {
                sampling_v2 = true;
                p.period = period;
            }
            "heapprofile" => p.period = 1,
            "heap" => {
                sampling_v2 = true;
                p.period = period / 2;
            }
            _ => return Err(LegacyError::Unrecognized),
        }
    } else if growth_header_re().is_match(line) || fragmentation_header_re().is_match(line) {
        p.period = 1;
    } else {
        return Err(LegacyError::Unrecognized);
    }
    p.sample_types = if has_alloc {
        vec![
            vt("alloc_objects", "count"),
            vt("alloc_space", "bytes"),
            vt("inuse_objects", "count"),
            vt("inuse_space", "bytes"),
        ]
    } else {
        vec![vt("objects", "count"), vt("space", "bytes")]
    };
    let mut lineno = 1;
    while s.scan() {
        lineno += 1;
        let line = s.text().trim();
        if is_space_or_comment(line) {
            continue;
        }
        if is_memory_map_sentinel(line) {
            break;
        }
        let (values, blocksize, addrs) = parse_heap_sample(line, p.period, sampling_v2, has_alloc)
            .or_else(|e| malformed(HEAP, format!("line {lineno}: {e}")))?;
        p.samples.push(LSample {
            addrs: addrs.into_iter().map(|a| a.wrapping_sub(1)).collect(),
            values,
            labels: vec![("bytes".into(), LabelValue::Num(blocksize, String::new()))],
        });
    }
    parse_additional_sections(&mut s, &mut p);
    Ok(p)
}

type HeapSample = (Vec<i64>, i64, Vec<u64>);

fn parse_heap_sample(
    line: &str,
    rate: i64,
    sampling_v2: bool,
    include_alloc: bool,
) -> Result<HeapSample, String> {
    let Some(c) = heap_sample_re().captures(line) else {
        return Err(format!("not a heap sample: {line:?}"));
    };
    let mut values = Vec::with_capacity(4);
    let mut blocksize = 0;
    let mut add = |cs: &str, ss: &str, label: &str| -> Result<(), String> {
        let bad = || format!("malformed sample: {line}");
        let mut count: i64 = cs.parse().map_err(|_| bad())?;
        let mut size: i64 = ss.parse().map_err(|_| bad())?;
        if count == 0 && size != 0 {
            return Err(format!("{label} count was 0 but {label} bytes was {size}"));
        }
        if count != 0 {
            blocksize = size.wrapping_div(count);
            if sampling_v2 {
                (count, size) = scale_heap_sample(count, size, rate);
            }
        }
        values.push(count);
        values.push(size);
        Ok(())
    };
    if include_alloc {
        add(&c[3], &c[4], "allocation")?;
    }
    add(&c[1], &c[2], "inuse")?;
    let addrs = parse_hex_addresses(&c[5]).map_err(|e| format!("malformed sample: {line}: {e}"))?;
    Ok((values, blocksize, addrs))
}

/// pprof's `scaleHeapSample`: un-samples a Poisson-sampled heap record.
fn scale_heap_sample(count: i64, size: i64, rate: i64) -> (i64, i64) {
    if count == 0 || size == 0 {
        return (0, 0);
    }
    if rate <= 1 {
        return (count, size);
    }
    let avg = size as f64 / count as f64;
    let scale = 1.0 / (1.0 - (-avg / rate as f64).exp());
    ((count as f64 * scale) as i64, (size as f64 * scale) as i64)
}

// ---------------------------------------------------------- Go counts ----

fn parse_go_count(text: &str) -> LResult<Legacy> {
    let mut s = Lines::new(text);
    while s.scan() && is_space_or_comment(s.text()) {}
    let Some(m) = count_start_re().captures(s.text()) else {
        return Err(LegacyError::Unrecognized);
    };
    let kind = m[1].to_owned();
    let format = "legacy goroutine/threadcreate count";
    let mut p = Legacy {
        period_type: Some(vt(&kind, "count")),
        period: 1,
        sample_types: vec![vt(&kind, "count")],
        ..Default::default()
    };
    let mut lineno = 1;
    while s.scan() {
        lineno += 1;
        let line = s.text();
        if is_space_or_comment(line) {
            continue;
        }
        if line.starts_with("---") {
            break;
        }
        let Some(m) = count_re().captures(line) else {
            return malformed(format, format!("line {lineno}: not `N @ 0x...`: {line:?}"));
        };
        let Some(n) = parse_int_base0(&m[1]) else {
            return malformed(format, format!("line {lineno}: bad count {:?}", &m[1]));
        };
        let mut addrs = Vec::new();
        for f in m[2].split_whitespace() {
            let Ok(a) = u64::from_str_radix(&f[2..], 16) else {
                return malformed(format, format!("line {lineno}: bad address {f:?}"));
            };
            addrs.push(a.wrapping_sub(1));
        }
        p.samples.push(LSample {
            addrs,
            values: vec![n],
            labels: Vec::new(),
        });
    }
    parse_additional_sections(&mut s, &mut p);
    Ok(p)
}

// ------------------------------------------------------------ threadz ----

fn parse_thread(text: &str) -> LResult<Legacy> {
    let mut s = Lines::new(text);
    while s.scan() && is_space_or_comment(s.text()) {}
    let mut line = s.text().to_owned();
    if threadz_start_re().is_match(&line) {
        while s.scan() {
            line = s.text().to_owned();
            if is_memory_map_sentinel(&line) || line.starts_with('-') {
                break;
            }
        }
    } else if !thread_start_re().is_match(&line) {
        return Err(LegacyError::Unrecognized);
    }
    let mut p = Legacy {
        sample_types: vec![vt("thread", "count")],
        period_type: Some(vt("thread", "count")),
        period: 1,
        ..Default::default()
    };
    while !is_memory_map_sentinel(&line) {
        if line.starts_with("---- no stack trace for") {
            break;
        }
        if !thread_start_re().is_match(&line) {
            return Err(LegacyError::Unrecognized);
        }
        let (next, addrs) = parse_thread_sample(&mut s)?;
        line = next;
        match addrs {
            None => {
                if let Some(last) = p.samples.last_mut() {
                    last.values[0] += 1;
                }
            }
            Some(addrs) if addrs.is_empty() => {
                if let Some(last) = p.samples.last_mut() {
                    last.values[0] += 1;
                }
            }
            Some(mut addrs) => {
                for a in addrs.iter_mut().skip(1) {
                    *a = a.wrapping_sub(1);
                }
                p.samples.push(LSample {
                    addrs,
                    values: vec![1],
                    labels: Vec::new(),
                });
            }
        }
    }
    parse_additional_sections(&mut s, &mut p);
    cleanup_duplicate_locations(&mut p);
    Ok(p)
}

/// Returns the line after the stack and its addresses (`None` for
/// "same as previous thread").
fn parse_thread_sample(s: &mut Lines<'_>) -> LResult<(String, Option<Vec<u64>>)> {
    let mut line = String::new();
    let mut same = false;
    let mut addrs = Vec::new();
    while s.scan() {
        line = s.text().trim().to_owned();
        if line.is_empty() {
            continue;
        }
        if line.starts_with("---") {
            break;
        }
        if line.contains("same as previous thread") {
            same = true;
            continue;
        }
        match parse_hex_addresses(&line) {
            Ok(a) => addrs.extend(a),
            Err(e) => return malformed("legacy threadz", format!("malformed sample: {line}: {e}")),
        }
    }
    Ok((line, if same { None } else { Some(addrs) }))
}

// --------------------------------------------------------- contention ----

fn parse_contention(text: &str) -> LResult<Legacy> {
    let mut s = Lines::new(text);
    if !s.scan() {
        return Err(LegacyError::Unrecognized);
    }
    let l = s.text();
    if !(l.starts_with("--- contentionz ")
        || l.starts_with("--- mutex:")
        || l.starts_with("--- contention:"))
    {
        return Err(LegacyError::Unrecognized);
    }
    let mut p = Legacy {
        period_type: Some(vt("contentions", "count")),
        period: 1,
        sample_types: vec![vt("contentions", "count"), vt("delay", "nanoseconds")],
        ..Default::default()
    };
    let mut cpu_hz: i64 = 0;
    while s.scan() {
        let line = s.text().trim();
        if is_space_or_comment(line) {
            continue;
        }
        if line.starts_with("---") {
            break;
        }
        let Some((key, val)) = line.split_once('=') else {
            break;
        };
        let (key, val) = (key.trim(), val.trim());
        let num = || parse_int_base0(val).ok_or(LegacyError::Unrecognized);
        match key {
            "cycles/second" => cpu_hz = num()?,
            "sampling period" => p.period = num()?,
            "ms since reset" => p.duration_nanos = num()?.wrapping_mul(1_000_000),
            "discarded samples" => {}
            _ => return Err(LegacyError::Unrecognized),
        }
    }
    loop {
        let line = s.text().trim();
        if line.starts_with("---") {
            break;
        }
        if !is_space_or_comment(line) {
            let Some(c) = contention_sample_re().captures(line) else {
                return Err(LegacyError::Unrecognized);
            };
            let bad =
                || LegacyError::Malformed("legacy contention", format!("malformed sample: {line}"));
            let mut v1: i64 = c[1].parse().map_err(|_| bad())?;
            let mut v2: i64 = c[2].parse().map_err(|_| bad())?;
            if p.period > 0 {
                if cpu_hz > 0 {
                    let cpu_ghz = cpu_hz as f64 / 1e9;
                    v1 = (v1 as f64 * p.period as f64 / cpu_ghz) as i64;
                }
                v2 = v2.wrapping_mul(p.period);
            }
            let addrs = parse_hex_addresses(&c[3]).map_err(|e| {
                LegacyError::Malformed(
                    "legacy contention",
                    format!("malformed sample: {line}: {e}"),
                )
            })?;
            p.samples.push(LSample {
                addrs: addrs.into_iter().map(|a| a.wrapping_sub(1)).collect(),
                values: vec![v2, v1],
                labels: Vec::new(),
            });
        }
        if !s.scan() {
            break;
        }
    }
    parse_additional_sections(&mut s, &mut p);
    Ok(p)
}

// --------------------------------------------------------------- Java ----

fn parse_java_profile(text: &str) -> LResult<Legacy> {
    let Some((first, rest)) = text.split_once('\n') else {
        return Err(LegacyError::Unrecognized);
    };
    let ptype = match first.trim() {
        "--- heapz 1 ---" => "heap",
        "--- contentionz 1 ---" => "contention",
        _ => return Err(LegacyError::Unrecognized),
    };
    let mut p = Legacy {
        period_type: Some(ValueType::default()),
        ..Default::default()
    };
    let rest = parse_java_header(ptype, rest, &mut p)?;
    let rest = parse_java_samples(ptype, rest, &mut p)?;
    parse_java_locations(rest, &mut p)?;
    Ok(p)
}

/// Iterates `\n`-terminated lines of `b` (an unterminated tail is not
/// yielded, as in pprof), returning each line and the text after it.
fn terminated_lines(b: &str) -> impl Iterator<Item = (&str, &str, &str)> {
    let mut rest = b;
    std::iter::from_fn(move || {
        let nl = rest.find('\n')?;
        let here = rest;
        let line = &rest[..nl];
        rest = &rest[nl + 1..];
        Some((line, here, rest))
    })
}

fn parse_java_header<'a>(ptype: &str, b: &'a str, p: &mut Legacy) -> LResult<&'a str> {
    const F: &str = "legacy Java";
    let mut remaining = b;
    for (line, here, after) in terminated_lines(b) {
        let line = line.trim();
        if !line.is_empty() {
            let Some(h) = java_attribute_re().captures(line) else {
                return Ok(here);
            };
            let (attr, value) = (h[1].trim(), h[2].trim());
            match (ptype, attr) {
                (_, "format") => {
                    if value != "java" {
                        return Err(LegacyError::Unrecognized);
                    }
                }
                ("heap", "resolution") => {
                    p.sample_types = vec![vt("inuse_objects", "count"), vt("inuse_space", value)]
                }
                ("contention", "resolution") => {
                    p.sample_types = vec![vt("contentions", "count"), vt("delay", value)]
                }
                ("contention", "sampling period") => {
                    p.period_type = Some(vt("contentions", "count"));
                    p.period = parse_int_base0(value).map_or_else(
                        || malformed(F, format!("failed to parse attribute {line}")),
                        Ok,
                    )?;
                }
                ("contention", "ms since reset") => {
                    let ms = parse_int_base0(value).map_or_else(
                        || malformed(F, format!("failed to parse attribute {line}")),
                        Ok,
                    )?;
                    p.duration_nanos = ms.wrapping_mul(1_000_000);
                }
                _ => return Err(LegacyError::Unrecognized),
            }
        }
        remaining = after;
    }
    Ok(remaining)
}

fn parse_java_samples<'a>(ptype: &str, b: &'a str, p: &mut Legacy) -> LResult<&'a str> {
    const F: &str = "legacy Java";
    let mut remaining = b;
    for (line, here, after) in terminated_lines(b) {
        let line = line.trim();
        if !line.is_empty() {
            let Some(c) = java_sample_re().captures(line) else {
                return Ok(here);
            };
            let addrs = parse_hex_addresses(&c[3])
                .or_else(|e| malformed(F, format!("malformed sample: {line}: {e}")))?;
            let v0 = parse_int_base0(&c[2])
                .map_or_else(|| malformed(F, format!("parsing sample {line}")), Ok)?;
            let v1 = parse_int_base0(&c[1])
                .map_or_else(|| malformed(F, format!("parsing sample {line}")), Ok)?;
            let mut values = vec![v0, v1];
            let mut labels = Vec::new();
            match ptype {
                "heap" => {
                    const JAVA_HEAPZ_SAMPLING_RATE: i64 = 524288;
                    if values[0] == 0 {
                        return malformed(
                            F,
                            format!("parsing sample {line}: second value must be non-zero"),
                        );
                    }
                    labels.push((
                        "bytes".to_owned(),
                        LabelValue::Num(values[1].wrapping_div(values[0]), String::new()),
                    ));
                    let (a, b) = scale_heap_sample(values[0], values[1], JAVA_HEAPZ_SAMPLING_RATE);
                    values = vec![a, b];
                }
                _ => {
                    if p.period != 0 {
                        values[0] = values[0].wrapping_mul(p.period);
                        values[1] = values[1].wrapping_mul(p.period);
                    }
                }
            }
            p.samples.push(LSample {
                addrs,
                values,
                labels,
            });
        }
        remaining = after;
    }
    Ok(remaining)
}

fn parse_java_locations(b: &str, p: &mut Legacy) -> LResult<()> {
    let used: std::collections::HashSet<u64> = p
        .samples
        .iter()
        .flat_map(|s| s.addrs.iter().copied())
        .collect();
    for line in b.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some(j) = java_location_re().captures(line) else {
            continue;
        };
        let Ok(addr) = u64::from_str_radix(&j[1], 16) else {
            return malformed("legacy Java", format!("parsing sample {line}"));
        };
        if !used.contains(&addr) {
            continue;
        }
        let rest = &j[2];
        let (func, file, lineno) = if let Some(fl) = java_location_file_line_re().captures(rest) {
            let n = fl[3].parse::<i64>().ok().filter(|&n| n > 0).unwrap_or(0);
            (fl[1].to_owned(), fl[2].to_owned(), n)
        } else if let Some(fp) = java_location_path_re().captures(rest) {
            let base = fp[2].rsplit('/').next().unwrap_or_default().to_owned();
            (fp[1].to_owned(), base, 0)
        } else if rest.contains("generated stub/JIT") {
            ("STUB".to_owned(), String::new(), 0)
        } else {
            (rest.to_owned(), String::new(), 0)
        };
        p.symbols.insert(addr, (func, file, lineno));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_int_base0_matches_go() {
        assert_eq!(parse_int_base0("10"), Some(10));
        assert_eq!(parse_int_base0("010"), Some(8));
        assert_eq!(parse_int_base0("0x1f"), Some(31));
        assert_eq!(parse_int_base0("09"), None);
        assert_eq!(parse_int_base0("0"), Some(0));
    }

    #[test]
    fn scale_heap_sample_unsamples() {
        assert_eq!(scale_heap_sample(1, 1024, 1), (1, 1024));
        let (c, s) = scale_heap_sample(1, 512 * 1024, 512 * 1024);
        assert_eq!((c, s), (1, 829_411));
    }
}
