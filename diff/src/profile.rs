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

impl Profile {
    /// Sum of the values of sample type `index` over all samples
    /// (saturating; 0 when the index is out of range).
    pub fn total(&self, index: usize) -> i64 {
        self.samples
            .iter()
            .filter_map(|s| s.values.get(index))
            .fold(0i64, |acc, &v| acc.saturating_add(v))
    }

    /// Per-sample-type totals, in [`Profile::sample_types`] order.
    pub fn totals(&self) -> Vec<i64> {
        (0..self.sample_types.len())
            .map(|i| self.total(i))
            .collect()
    }

    /// Index of the sample type whose kind is `name` or whose
    /// `kind/unit` is `name`.
    pub fn sample_type_index(&self, name: &str) -> Option<usize> {
        self.sample_types
            .iter()
            .position(|t| t.kind == name || t.to_string() == name)
    }

    /// Returns the id of `frame`, appending it when it is new. Linear in
    /// the number of frames: use [`FrameInterner`] for bulk work.
    pub fn intern_frame(&mut self, frame: Frame) -> FrameId {
        if let Some(i) = self.frames.iter().position(|f| *f == frame) {
            return i as FrameId;
        }
        self.frames.push(frame);
        (self.frames.len() - 1) as FrameId
    }

    /// Checks the invariants other code relies on: every sample has one
    /// value per sample type and every stack entry names an existing frame.
    pub fn check_valid(&self) -> Result<(), String> {
        let n = self.sample_types.len();
        for (i, s) in self.samples.iter().enumerate() {
            if s.values.len() != n {
                return Err(format!(
                    "sample {i} has {} values for {n} sample types",
                    s.values.len()
                ));
            }
            if let Some(&f) = s.stack.iter().find(|&&f| f as usize >= self.frames.len()) {
                return Err(format!(
                    "sample {i} refers to frame {f} of {}",
                    self.frames.len()
                ));
            }
        }
        Ok(())
    }

    /// Appends `other`'s samples, re-interning its frames. Sample types must
    /// be equal (the caller checks; values are copied index by index).
    /// Samples are not aggregated; metadata (period, time) of `self` is kept,
    /// durations are added.
    pub fn merge_from(&mut self, other: &Profile) {
        let mut interner = FrameInterner::new(self);
        let map: Vec<FrameId> = other
            .frames
            .iter()
            .map(|f| interner.intern(&mut self.frames, f))
            .collect();
        for s in &other.samples {
            self.samples.push(Sample {
                stack: s.stack.iter().map(|&f| map[f as usize]).collect(),
                values: s.values.clone(),
                labels: s.labels.clone(),
            });
        }
        self.duration_nanos = self.duration_nanos.saturating_add(other.duration_nanos);
        if self.time_nanos == 0 || (other.time_nanos != 0 && other.time_nanos < self.time_nanos) {
            self.time_nanos = other.time_nanos;
        }
    }

    /// Multiplies every value by `factor` (rounding to nearest).
    pub fn scale(&mut self, factor: f64) {
        for s in &mut self.samples {
            for v in &mut s.values {
                *v = (*v as f64 * factor).round() as i64;
            }
        }
    }
}

/// A hash index over a profile's frames for interning many frames quickly.
#[derive(Debug, Default)]
pub struct FrameInterner {
    index: std::collections::HashMap<Frame, FrameId>,
}

impl FrameInterner {
    /// Indexes the frames `p` already has.
    pub fn new(p: &Profile) -> Self {
        FrameInterner {
            index: p
                .frames
                .iter()
                .enumerate()
                .map(|(i, f)| (f.clone(), i as FrameId))
                .collect(),
        }
    }

    /// Returns the id of `frame` in `frames`, appending it when new.
    pub fn intern(&mut self, frames: &mut Vec<Frame>, frame: &Frame) -> FrameId {
        if let Some(&id) = self.index.get(frame) {
            return id;
        }
        let id = frames.len() as FrameId;
        frames.push(frame.clone());
        self.index.insert(frame.clone(), id);
        id
    }
}
