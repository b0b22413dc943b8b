//! Building pprof profiles from resolved frames, writing them, and a
//! canonical text dump for reference tests.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::path::Path;
use std::time::UNIX_EPOCH;

use diff::pprof::proto::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};
use prost::Message as _;

use crate::ProfileMeta;

/// A binary (or the kernel) as it appears in a pprof `Mapping`.
///
/// Addresses of frames in this mapping are *normalized*: ELF virtual
/// addresses as in the file (for the kernel: the running kernel's
/// addresses). `memory_start - file_offset` equals the segment's
/// `p_vaddr - p_offset`, so `go tool pprof` computes a load base of zero
/// and relates the addresses to the binary; the same binary loaded at
/// different addresses by different processes yields the same locations.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MappingDesc {
    /// Path of the binary, or `[kernel.kallsyms]`.
    pub path: String,
    /// GNU build id in lower-case hex, or empty.
    pub build_id: String,
    /// Normalized start address (inclusive).
    pub memory_start: u64,
    /// Normalized end address (exclusive).
    pub memory_limit: u64,
    /// File offset that `memory_start` maps.
    pub file_offset: u64,
}

/// One source line of a frame: a function, possibly inlined.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrameLine {
    /// Demangled function name.
    pub function: String,
    /// Raw (mangled) symbol name; equal to `function` if not mangled.
    pub system_name: String,
    /// Source file, or empty if unknown.
    pub file: String,
    /// Line number, or 0 if unknown.
    pub line: i64,
    /// Column, or 0 if unknown.
    pub column: i64,
}

/// Read access to a source line, owned ([`FrameLine`]) or interned (the
/// symbolizer's cache).
pub(crate) trait LineLike {
    fn function(&self) -> &str;
    fn system_name(&self) -> &str;
    fn file(&self) -> &str;
    fn line(&self) -> i64;
    fn column(&self) -> i64;
}

impl LineLike for FrameLine {
    fn function(&self) -> &str {
        &self.function
    }
    fn system_name(&self) -> &str {
        &self.system_name
    }
    fn file(&self) -> &str {
        &self.file
    }
    fn line(&self) -> i64 {
        self.line
    }
    fn column(&self) -> i64 {
        self.column
    }
}

/// A resolved stack frame.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResolvedFrame {
    /// Index into the mapping slice given to
    /// [`build_profile_from_resolved`], or `None` for an address in no
    /// known mapping.
    pub mapping: Option<usize>,
    /// Normalized address (see [`MappingDesc`]); absolute if no mapping.
    pub address: u64,
    /// Source lines, innermost inlined function first, the real
    /// (outermost) function last. Empty for an unsymbolized frame, which
    /// keeps its address.
    pub lines: Vec<FrameLine>,
}

/// A sample whose frames are already resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedSample {
    /// Frames, leaf first.
    pub frames: Vec<ResolvedFrame>,
    /// Process id (label `pid`).
    pub pid: u32,
    /// Thread name (label `thread`).
    pub thread: String,
    /// Number of samples.
    pub count: u64,
}

/// Sample types, period type and period of a profile (what
/// [`build_profile`] writes besides the samples).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileShape {
    /// (type, unit) of each sample value, e.g. `("alloc_space", "bytes")`.
    pub sample_types: Vec<(String, String)>,
    /// (type, unit) of the period, e.g. `("cpu", "nanoseconds")`.
    pub period_type: (String, String),
    /// The period (0 if none).
    pub period: i64,
    /// The sample type `go tool pprof` shows by default (`None`: the last).
    pub default_sample_type: Option<String>,
}

impl ProfileShape {
    /// A shape from string literals.
    pub fn new(
        sample_types: &[(&str, &str)],
        period_type: (&str, &str),
        period: i64,
        default_sample_type: Option<&str>,
    ) -> Self {
        Self {
            sample_types: sample_types
                .iter()
                .map(|(t, u)| (t.to_string(), u.to_string()))
                .collect(),
            period_type: (period_type.0.to_string(), period_type.1.to_string()),
            period,
            default_sample_type: default_sample_type.map(str::to_string),
        }
    }

    /// The CPU profile's shape: `samples/count` and `cpu/nanoseconds`,
    /// period type `cpu/nanoseconds`, period `1e9 / frequency_hz` (0 if the
    /// frequency is 0).
    pub fn cpu(frequency_hz: u64) -> Self {
        let period = 1_000_000_000u64
            .checked_div(frequency_hz)
            .map_or(0, |p| p as i64);
        Self::new(
            &[("samples", "count"), ("cpu", "nanoseconds")],
            ("cpu", "nanoseconds"),
            period,
            None,
        )
    }
}

/// A resolved sample with arbitrary values (one per sample type of the
/// [`ProfileShape`]) and string labels, for [`build_profile`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileSample {
    /// Frames, leaf first.
    pub frames: Vec<ResolvedFrame>,
    /// Process id (numeric label `pid`).
    pub pid: u32,
    /// Values, in the order of the shape's sample types.
    pub values: Vec<i64>,
    /// String labels (key, value), written after `pid`.
    pub labels: Vec<(String, String)>,
}

#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut s = Self::default();
        s.intern("");
        s
    }

    fn intern(&mut self, v: &str) -> i64 {
        if let Some(&i) = self.index.get(v) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(v.to_string());
        self.index.insert(v.to_string(), i);
        i
    }
}

/// What merges samples: location ids, pid, string labels (interned).
type SampleKey = (Vec<u64>, u32, Vec<(i64, i64)>);

/// Incremental construction of a profile; the crate's one place that
/// assigns ids and interns strings.
pub(crate) struct ProfileBuilder {
    s: Strings,
    p: Profile,
    period: i64,
    mapping_count: usize,
    has_fn: Vec<bool>,
    has_ln: Vec<bool>,
    has_inl: Vec<bool>,
    /// (name, system name, file) string ids to function id.
    functions: HashMap<(i64, i64, i64), u64>,
    locations: HashMap<(u64, u64), u64>,
    merged: HashMap<SampleKey, usize>,
}

impl ProfileBuilder {
    /// A CPU-profile builder ([`ProfileShape::cpu`]) for `mapping_count`
    /// mappings (given at [`Self::finish`]).
    pub(crate) fn new(meta: &ProfileMeta, mapping_count: usize) -> Self {
        Self::with_shape(&ProfileShape::cpu(meta.frequency_hz), meta, mapping_count)
    }

    /// A builder writing `shape`'s sample types, period type and period.
    pub(crate) fn with_shape(
        shape: &ProfileShape,
        meta: &ProfileMeta,
        mapping_count: usize,
    ) -> Self {
        let mut s = Strings::new();
        let sample_type = shape
            .sample_types
            .iter()
            .map(|(t, u)| ValueType {
                r#type: s.intern(t),
                unit: s.intern(u),
            })
            .collect();
        let period_type = Some(ValueType {
            r#type: s.intern(&shape.period_type.0),
            unit: s.intern(&shape.period_type.1),
        });
        let mut p = Profile {
            sample_type,
            period_type,
            period: shape.period,
            ..Default::default()
        };
        if let Some(d) = &shape.default_sample_type {
            p.default_sample_type = s.intern(d);
        }
        p.time_nanos = meta
            .start
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        p.duration_nanos = i64::try_from(meta.duration.as_nanos()).unwrap_or(i64::MAX);
        p.comment = meta.comments.iter().map(|c| s.intern(c)).collect();
        Self {
            s,
            p,
            period: shape.period,
            mapping_count,
            has_fn: vec![false; mapping_count],
            has_ln: vec![false; mapping_count],
            has_inl: vec![false; mapping_count],
            functions: HashMap::new(),
            locations: HashMap::new(),
            merged: HashMap::new(),
        }
    }

    /// The location id of (`mapping` index, `address`); `lines` are used
    /// only the first time this pair is seen.
    pub(crate) fn location<L: LineLike>(
        &mut self,
        mapping: Option<usize>,
        address: u64,
        lines: &[L],
    ) -> u64 {
        let mapping_id = match mapping {
            Some(i) if i < self.mapping_count => i as u64 + 1,
            _ => 0,
        };
        if let Some(&id) = self.locations.get(&(mapping_id, address)) {
            return id;
        }
        let mut out = Vec::with_capacity(lines.len());
        for l in lines {
            let (name, system_name, filename) = (
                self.s.intern(l.function()),
                self.s.intern(l.system_name()),
                self.s.intern(l.file()),
            );
            let next = self.functions.len() as u64 + 1;
            let fid = *self
                .functions
                .entry((name, system_name, filename))
                .or_insert_with(|| {
                    self.p.function.push(Function {
                        id: next,
                        name,
                        system_name,
                        filename,
                        start_line: 0,
                    });
                    next
                });
            out.push(Line {
                function_id: fid,
                line: l.line(),
                column: l.column(),
            });
        }
        if mapping_id != 0 {
            let m = (mapping_id - 1) as usize;
            self.has_fn[m] |= !lines.is_empty();
            self.has_ln[m] |= lines.iter().any(|l| l.line() != 0);
            self.has_inl[m] |= lines.len() > 1;
        }
        let id = self.p.location.len() as u64 + 1;
        self.p.location.push(Location {
            id,
            mapping_id,
            address,
            line: out,
            is_folded: false,
        });
        self.locations.insert((mapping_id, address), id);
        id
    }

    /// Add a CPU sample (location ids leaf first): values `count` and
    /// `count * period`, label `thread`; merged with an earlier sample of
    /// the same stack and labels.
    pub(crate) fn sample(&mut self, location_ids: Vec<u64>, pid: u32, thread: &str, count: u64) {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        let ns = count.saturating_mul(self.period);
        self.sample_values(location_ids, pid, &[("thread", thread)], &[count, ns]);
    }

    /// Add a sample with `values` (one per sample type) and string
    /// `labels` after the numeric `pid`; merged (values added) with an
    /// earlier sample of the same stack, pid and labels.
    pub(crate) fn sample_values<K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        location_ids: Vec<u64>,
        pid: u32,
        labels: &[(K, V)],
        values: &[i64],
    ) {
        let interned: Vec<(i64, i64)> = labels
            .iter()
            .map(|(k, v)| (self.s.intern(k.as_ref()), self.s.intern(v.as_ref())))
            .collect();
        let key = (location_ids, pid, interned);
        if let Some(&i) = self.merged.get(&key) {
            for (v, add) in self.p.sample[i].value.iter_mut().zip(values) {
                *v = v.saturating_add(*add);
            }
            return;
        }
        let mut label = vec![Label {
            key: self.s.intern("pid"),
            num: i64::from(pid),
            ..Default::default()
        }];
        label.extend(key.2.iter().map(|&(key, str)| Label {
            key,
            str,
            ..Default::default()
        }));
        self.p.sample.push(Sample {
            location_id: key.0.clone(),
            value: values.to_vec(),
            label,
        });
        self.merged.insert(key, self.p.sample.len() - 1);
    }

    /// Emit the mappings (ids 1.. in order) and the string table.
    pub(crate) fn finish(mut self, mappings: &[MappingDesc]) -> Profile {
        for (i, m) in mappings.iter().enumerate().take(self.mapping_count) {
            self.p.mapping.push(Mapping {
                id: i as u64 + 1,
                memory_start: m.memory_start,
                memory_limit: m.memory_limit,
                file_offset: m.file_offset,
                filename: self.s.intern(&m.path),
                build_id: self.s.intern(&m.build_id),
                has_functions: self.has_fn[i],
                has_filenames: self.has_ln[i],
                has_line_numbers: self.has_ln[i],
                has_inline_frames: self.has_inl[i],
            });
        }
        self.p.string_table = self.s.table;
        self.p
    }
}

/// Build a pprof profile from resolved samples: sample types
/// `samples/count` and `cpu/nanoseconds`, period type `cpu/nanoseconds`,
/// period `1e9 / frequency_hz`, labels `pid` (numeric) and `thread`.
/// Mappings are emitted in the order given (ids 1..); locations are
/// deduplicated by (mapping, address) (the lines of the first frame seen
/// win), functions by (name, system name, file); samples with the same
/// stack and labels are merged.
pub fn build_profile_from_resolved(
    mappings: &[MappingDesc],
    samples: &[ResolvedSample],
    meta: &ProfileMeta,
) -> Profile {
    let mut b = ProfileBuilder::new(meta, mappings.len());
    for s in samples {
        let ids = s
            .frames
            .iter()
            .map(|f| b.location(f.mapping, f.address, &f.lines))
            .collect();
        b.sample(ids, s.pid, &s.thread, s.count);
    }
    b.finish(mappings)
}

/// Build a pprof profile of any shape from resolved samples: the sample
/// types, period type and period of `shape`, each sample's `values` in that
/// order, labels `pid` (numeric) and the sample's string labels. Mappings,
/// locations, functions and merging as in [`build_profile_from_resolved`]
/// (samples with the same stack, pid and labels add their values).
pub fn build_profile(
    mappings: &[MappingDesc],
    samples: &[ProfileSample],
    shape: &ProfileShape,
    meta: &ProfileMeta,
) -> Profile {
    let mut b = ProfileBuilder::with_shape(shape, meta, mappings.len());
    for s in samples {
        let ids = s
            .frames
            .iter()
            .map(|f| b.location(f.mapping, f.address, &f.lines))
            .collect();
        b.sample_values(ids, s.pid, &s.labels, &s.values);
    }
    b.finish(mappings)
}

/// Write `profile` as gzip'd protobuf to `path`, atomically: the bytes go
/// to a temporary file in the same directory, which is synced and then
/// renamed over `path`.
pub fn write_pprof_gz(profile: &Profile, path: &Path) -> io::Result<()> {
    let bytes = profile.encode_to_vec();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "output path has no file name")
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let file = std::fs::File::create(&tmp)?;
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        gz.write_all(&bytes)?;
        let file = gz.finish()?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A deterministic text dump of a profile for reference tests, in the
/// spirit of google/pprof's `Profile.String()` but independent of id
/// assignment and order: header fields, mappings sorted by file name,
/// then samples sorted by their rendered text, each sample listing its
/// frames leaf first as `address mapping-file function file:line`, with
/// inlined functions joined by ` <- ` (innermost first). Addresses are
/// printed as stored (normalized ELF addresses for mapped frames).
pub fn canonical_text(p: &Profile) -> String {
    let st = |i: i64| -> &str {
        usize::try_from(i)
            .ok()
            .and_then(|i| p.string_table.get(i))
            .map(String::as_str)
            .unwrap_or("?")
    };
    let vt = |v: &ValueType| format!("{}/{}", st(v.r#type), st(v.unit));
    let mut out = String::new();
    let types: Vec<String> = p.sample_type.iter().map(vt).collect();
    let _ = writeln!(out, "sample_types: {}", types.join(" "));
    let _ = writeln!(
        out,
        "period_type: {} period: {}",
        p.period_type.as_ref().map(vt).unwrap_or_default(),
        p.period
    );
    let _ = writeln!(
        out,
        "time_nanos: {} duration_nanos: {}",
        p.time_nanos, p.duration_nanos
    );
    for c in &p.comment {
        let _ = writeln!(out, "comment: {}", st(*c));
    }
    let mappings: HashMap<u64, &Mapping> = p.mapping.iter().map(|m| (m.id, m)).collect();
    let functions: HashMap<u64, &Function> = p.function.iter().map(|f| (f.id, f)).collect();
    let locations: HashMap<u64, &Location> = p.location.iter().map(|l| (l.id, l)).collect();
    let mut ms: Vec<String> = p
        .mapping
        .iter()
        .map(|m| {
            let mut flags = String::new();
            for (b, f) in [
                (m.has_functions, "[FN]"),
                (m.has_filenames, "[FL]"),
                (m.has_line_numbers, "[LN]"),
                (m.has_inline_frames, "[IN]"),
            ] {
                if b {
                    flags.push_str(f);
                }
            }
            format!(
                "  {} build_id={} {:#x}/{:#x}/{:#x} {}",
                st(m.filename),
                st(m.build_id),
                m.memory_start,
                m.memory_limit,
                m.file_offset,
                flags
            )
        })
        .collect();
    ms.sort();
    let _ = writeln!(out, "mappings:");
    for m in ms {
        let _ = writeln!(out, "{}", m.trim_end());
    }
    let mut samples: Vec<String> = p
        .sample
        .iter()
        .map(|s| {
            let mut t = String::new();
            let vals: Vec<String> = s.value.iter().map(i64::to_string).collect();
            let mut labels: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            for l in &s.label {
                let v = if l.str != 0 {
                    format!("{:?}", st(l.str))
                } else {
                    l.num.to_string()
                };
                labels.entry(st(l.key)).or_default().push(v);
            }
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=[{}]", v.join(",")))
                .collect();
            let _ = writeln!(t, "  values=[{}] {}", vals.join(" "), labels.join(" "));
            for id in &s.location_id {
                let Some(loc) = locations.get(id) else {
                    let _ = writeln!(t, "    <missing location {id}>");
                    continue;
                };
                let file = mappings
                    .get(&loc.mapping_id)
                    .map(|m| st(m.filename))
                    .unwrap_or("?");
                let lines: Vec<String> = loc
                    .line
                    .iter()
                    .map(|l| match functions.get(&l.function_id) {
                        Some(f) => {
                            let mut x = st(f.name).to_string();
                            if f.system_name != f.name {
                                let _ = write!(x, "[{}]", st(f.system_name));
                            }
                            if f.filename != 0 || l.line != 0 {
                                let _ = write!(x, " {}:{}", st(f.filename), l.line);
                            }
                            x
                        }
                        None => format!("<missing function {}>", l.function_id),
                    })
                    .collect();
                let sym = if lines.is_empty() {
                    "??".to_string()
                } else {
                    lines.join(" <- ")
                };
                let _ = writeln!(t, "    {:#x} {} {}", loc.address, file, sym);
            }
            t
        })
        .collect();
    samples.sort();
    let _ = writeln!(out, "samples:");
    for s in samples {
        out.push_str(&s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn frame(address: u64, function: &str) -> ResolvedFrame {
        ResolvedFrame {
            mapping: Some(0),
            address,
            lines: vec![FrameLine {
                function: function.to_string(),
                system_name: function.to_string(),
                file: "a.go".to_string(),
                line: 1,
                column: 0,
            }],
        }
    }

    /// Any shape: its types, period and default type are written, values
    /// of samples with the same stack, pid and labels are added, a label
    /// keeps samples apart.
    #[test]
    fn build_profile_writes_the_shape_and_merges_values() {
        let mappings = [MappingDesc {
            path: "/bin/x".into(),
            build_id: "ab".into(),
            memory_start: 0x1000,
            memory_limit: 0x2000,
            file_offset: 0,
        }];
        let stack = vec![frame(0x1010, "main.a"), frame(0x1020, "main.main")];
        let sample = |values: Vec<i64>, labels: Vec<(String, String)>| ProfileSample {
            frames: stack.clone(),
            pid: 7,
            values,
            labels,
        };
        let origin = vec![("origin".to_string(), "before".to_string())];
        let samples = [
            sample(vec![1, 4096], vec![]),
            sample(vec![2, 8192], vec![]),
            sample(vec![5, 0], origin),
        ];
        let shape = ProfileShape::new(
            &[("alloc_objects", "count"), ("alloc_space", "bytes")],
            ("space", "bytes"),
            524288,
            Some("alloc_space"),
        );
        let meta = ProfileMeta {
            frequency_hz: 0,
            start: SystemTime::UNIX_EPOCH + Duration::from_secs(1),
            duration: Duration::from_secs(2),
            comments: vec!["c".into()],
        };
        let p = build_profile(&mappings, &samples, &shape, &meta);
        assert_eq!(
            p.string_table[p.default_sample_type as usize],
            "alloc_space"
        );
        let text = canonical_text(&p);
        assert!(
            text.starts_with(
                "sample_types: alloc_objects/count alloc_space/bytes\nperiod_type: space/bytes period: 524288\n"
            ),
            "{text}"
        );
        assert!(text.contains("  values=[3 12288] pid=[7]\n"), "{text}");
        assert!(
            text.contains("  values=[5 0] origin=[\"before\"] pid=[7]\n"),
            "{text}"
        );
        assert_eq!(p.location.len(), 2);
        assert_eq!(p.function.len(), 2);
    }

    /// The CPU shape is the one `build_profile_from_resolved` writes.
    #[test]
    fn cpu_shape() {
        let s = ProfileShape::cpu(100);
        assert_eq!(s.period, 10_000_000);
        assert_eq!(
            s.sample_types[1],
            ("cpu".to_string(), "nanoseconds".to_string())
        );
        assert_eq!(ProfileShape::cpu(0).period, 0);
    }
}
