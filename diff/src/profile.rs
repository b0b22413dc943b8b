//! The owned, resolved profile model every other module works on.
//!
//! Interning and numeric ids exist only inside the codecs (`pprof`,
//! `folded`, legacy formats); here frames are plain strings, deduplicated
//! once into [`Profile::frames`] and referenced by [`FrameId`].

/// Index into [`Profile::frames`].
pub type FrameId = u32;

/// A sample type or period type: `cpu/nanoseconds`, `alloc_space/bytes`, ...
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ValueType {
    /// What is measured, e.g. `cpu`, `samples`, `alloc_space`, `goroutine`.
    pub kind: String,
    /// Its unit, e.g. `nanoseconds`, `count`, `bytes`.
    pub unit: String,
}

impl std::fmt::Display for ValueType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind, self.unit)
    }
}

/// Where a frame's code runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FrameKind {
    /// User-space code (the default when a producer does not say).
    #[default]
    User,
    /// Kernel code (our profiler marks these; `[kernel.kallsyms]` mappings too).
    Kernel,
}

/// One frame of a stack: a function at a place in a file.
///
/// A pprof `Location` with several `Line`s expands to several frames, the
/// innermost (inlined) first; all but the last have `inlined = true`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Frame {
    /// Function name as the producer wrote it (or `0x...` when unsymbolized).
    pub function: String,
    /// Source file, empty when unknown.
    pub file: String,
    /// Source line, 0 when unknown.
    pub line: i64,
    /// True when this frame was inlined into the frame after it.
    pub inlined: bool,
    /// User or kernel.
    pub kind: FrameKind,
    /// File name of the mapping (binary or library), empty when unknown.
    pub mapping: String,
    /// Mapping-relative address of the location, 0 when unknown.
    pub address: u64,
}

/// A label value: pprof allows strings or numbers (with an optional unit).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LabelValue {
    /// A string label (`pid`, `thread`, pprof labels from Go's `pprof.Do`).
    Str(String),
    /// A numeric label and its unit (may be empty).
    Num(i64, String),
}

/// One sample: a stack and one value per sample type.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sample {
    /// Frames, leaf first (`stack[0]` is where the sample was taken).
    pub stack: Vec<FrameId>,
    /// One value per [`Profile::sample_types`] entry.
    pub values: Vec<i64>,
    /// Labels, in producer order.
    pub labels: Vec<(String, LabelValue)>,
}

/// A resolved profile.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Profile {
    /// Sample types, in producer order; `Sample::values` follows it.
    pub sample_types: Vec<ValueType>,
    /// pprof's `default_sample_type`, if the producer set one.
    pub default_sample_type: Option<String>,
    /// pprof's `period_type`.
    pub period_type: Option<ValueType>,
    /// pprof's `period`.
    pub period: i64,
    /// Start time, nanoseconds since the epoch (0 when unknown).
    pub time_nanos: i64,
    /// Duration in nanoseconds (0 when unknown).
    pub duration_nanos: i64,
    /// Free-text comments.
    pub comments: Vec<String>,
    /// Unique frames referenced by samples.
    pub frames: Vec<Frame>,
    /// Samples.
    pub samples: Vec<Sample>,
}
