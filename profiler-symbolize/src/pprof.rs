//! Building pprof profiles from resolved frames. Ids, interning and
//! merging are the `profiler-pprof` crate's [`Builder`]; writing
//! ([`write_pprof_gz`]) and the canonical text dump ([`canonical_text`])
//! are that crate's too, re-exported.

use std::io;
use std::path::Path;
use std::time::UNIX_EPOCH;

use profiler_pprof::proto::{Mapping, Profile};
use profiler_pprof::{Builder, LabelSpec, LineSpec};

use crate::ProfileMeta;

pub use profiler_pprof::canonical_text;

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

/// Implements [`LineLike`] for a struct with fields `function`,
/// `system_name`, `file` (anything that derefs to `str`), `line`, `column`.
macro_rules! impl_line_like {
    ($t:ty) => {
        impl $crate::pprof::LineLike for $t {
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
    };
}
pub(crate) use impl_line_like;

impl_line_like!(FrameLine);

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

/// Incremental construction of a profile for the symbolizer: mapping
/// indexes known up front (their descriptions given at [`Self::finish`]),
/// locations keyed by (mapping, address) with the lines of the first frame
/// seen, numeric label `pid` first.
pub(crate) struct ProfileBuilder {
    b: Builder,
    period: i64,
    mapping_count: usize,
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
        let types: Vec<(&str, &str)> = shape
            .sample_types
            .iter()
            .map(|(t, u)| (t.as_str(), u.as_str()))
            .collect();
        let mut b = Builder::new(&types);
        b.set_period(
            Some((&shape.period_type.0, &shape.period_type.1)),
            shape.period,
        );
        b.set_default_sample_type(shape.default_sample_type.as_deref());
        let time = meta
            .start
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        b.set_time(
            time,
            i64::try_from(meta.duration.as_nanos()).unwrap_or(i64::MAX),
        );
        for c in &meta.comments {
            b.comment(c);
        }
        Self {
            b,
            period: shape.period,
            mapping_count,
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
        self.b.location_at(mapping_id, address, |b| {
            lines
                .iter()
                .map(|l| LineSpec {
                    function_id: b.function(l.function(), l.system_name(), l.file(), 0),
                    line: l.line(),
                    column: l.column(),
                })
                .collect()
        })
    }

    /// The location ids of resolved frames (leaf first).
    fn locations(&mut self, frames: &[ResolvedFrame]) -> Vec<u64> {
        frames
            .iter()
            .map(|f| self.location(f.mapping, f.address, &f.lines))
            .collect()
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
        let mut all = Vec::with_capacity(labels.len() + 1);
        all.push(LabelSpec::Num("pid", i64::from(pid), ""));
        all.extend(
            labels
                .iter()
                .map(|(k, v)| LabelSpec::Str(k.as_ref(), v.as_ref())),
        );
        self.b.sample(location_ids, &all, values);
    }

    /// Emit the mappings (ids 1.. in order, `has_*` flags from their
    /// locations).
    pub(crate) fn finish(mut self, mappings: &[MappingDesc]) -> Profile {
        for m in mappings.iter().take(self.mapping_count) {
            let wire = Mapping {
                memory_start: m.memory_start,
                memory_limit: m.memory_limit,
                file_offset: m.file_offset,
                ..Default::default()
            };
            self.b.push_mapping(&wire, &m.path, &m.build_id);
        }
        self.b.derive_mapping_flags();
        self.b.finish()
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
        let ids = b.locations(&s.frames);
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
        let ids = b.locations(&s.frames);
        b.sample_values(ids, s.pid, &s.labels, &s.values);
    }
    b.finish(mappings)
}

/// Write `profile` as gzip'd protobuf to `path`, atomically: the bytes go
/// to a temporary file in the same directory, which is synced and then
/// renamed over `path` ([`profiler_pprof::write_gzip_atomic`]).
pub fn write_pprof_gz(profile: &Profile, path: &Path) -> io::Result<()> {
    profiler_pprof::write_gzip_atomic(profile, path)
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
