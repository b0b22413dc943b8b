//! Normalization: turn a [`Profile`] into per-function and per-stack
//! totals keyed by names that stay stable across builds.
//!
//! Every rule is on by default, can be switched off by name (`profdiff
//! --no-normalize RULE`) and is listed in every report:
//!
//! | rule | what it does |
//! | --- | --- |
//! | `go-closure` | `.func1`, `.func2.3` → `.func*`; `.gowrap1` → `.gowrap*` (numbering shifts when closures are added) |
//! | `go-generic` | `[go.shape.int,...]` and `[...]` → `[...]`; a bare `go.shape.T` → `go.shape.*` |
//! | `go-wrapper` | strips the `-fm` (method value) and `.abi0` (ABI wrapper) suffixes |
//! | `rust-hash` | strips the `::h0123456789abcdef` legacy-mangling hash |
//! | `vendor` | `…/vendor/k8s.io/x` → `k8s.io/x`, in function names and file paths |
//! | `module-version` | `…/pkg/mod/k8s.io/client-go@v0.29.0/rest/x.go` → `k8s.io/client-go/rest/x.go` |
//! | `hex-address` | hexadecimal addresses (`0x4a3f10`) → `0x?`; an unsymbolized frame becomes `<mapping>+0x?` |
//! | `root-noise` | drops `runtime.goexit`, `runtime.main`, `_start`, `__libc_start_main`, `start_thread`, `clone`… at the root of each stack |
//! | `go-preempt` | a leaf `runtime.asyncPreempt` counts as its caller's own time: a sample that landed where Go's runtime preempted the caller |
//!
//! Functions are keyed by (normalized name, normalized file), never by
//! line or address, so an inlined and an out-of-line copy of a function are
//! the same function. User `--rewrite REGEX=>REPLACEMENT` rules run after the
//! built-in rules, in the order given. Then, like pprof: `--focus` keeps
//! samples with a frame matching, `--ignore` drops samples with a frame
//! matching, `--prune` drops the callees of the leaf-most matching frame.
//! `--no-kernel` drops kernel frames (a sample left empty is attributed to
//! `[kernel]`).

use std::collections::HashMap;
use std::hash::{BuildHasher as _, BuildHasherDefault};

use regex::Regex;

use crate::profile::{Frame, FrameKind, Profile, ValueType};
pub use crate::stacks::Stacks;

/// A built-in normalization rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// Go closure numbering.
    GoClosure,
    /// Go generic shapes.
    GoGeneric,
    /// Go `-fm` / `.abi0` wrappers.
    GoWrapper,
    /// Rust legacy mangling hash suffix.
    RustHash,
    /// Vendored import paths.
    Vendor,
    /// Module versions (and module cache prefixes) in file paths.
    ModuleVersion,
    /// Hex addresses.
    HexAddress,
    /// Runtime/libc frames at the root of stacks.
    RootNoise,
    /// A leaf `runtime.asyncPreempt` folded into the preempted function.
    GoPreempt,
}

impl Rule {
    /// Every rule, in the order they are applied.
    pub const ALL: [Rule; 9] = [
        Rule::GoClosure,
        Rule::GoGeneric,
        Rule::GoWrapper,
        Rule::RustHash,
        Rule::Vendor,
        Rule::ModuleVersion,
        Rule::HexAddress,
        Rule::RootNoise,
        Rule::GoPreempt,
    ];

    /// The rule's name as used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Rule::GoClosure => "go-closure",
            Rule::GoGeneric => "go-generic",
            Rule::GoWrapper => "go-wrapper",
            Rule::RustHash => "rust-hash",
            Rule::Vendor => "vendor",
            Rule::ModuleVersion => "module-version",
            Rule::HexAddress => "hex-address",
            Rule::RootNoise => "root-noise",
            Rule::GoPreempt => "go-preempt",
        }
    }

    /// One-line description for reports and `--help`.
    pub fn description(self) -> &'static str {
        match self {
            Rule::GoClosure => ".funcN/.funcN.M -> .func*, .gowrapN -> .gowrap*",
            Rule::GoGeneric => "generic shapes [go.shape.*]/[...] -> [...]",
            Rule::GoWrapper => "strip -fm and .abi0 wrapper suffixes",
            Rule::RustHash => "strip Rust ::h<16 hex> hash suffixes",
            Rule::Vendor => "strip .../vendor/ prefixes from names and files",
            Rule::ModuleVersion => "strip @vX.Y.Z and module cache prefixes from files",
            Rule::HexAddress => "hex addresses -> 0x?",
            Rule::RootNoise => {
                "drop runtime.goexit, runtime.main, _start, libc/thread start frames at stack roots"
            }
            Rule::GoPreempt => "a leaf runtime.asyncPreempt counts as its caller's self time",
        }
    }

    /// Parse a rule name.
    pub fn from_name(name: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The rules named in `names` (`all` for every rule), in the order
    /// given; an unknown name is [`NormalizeError::UnknownRule`].
    pub fn parse_list<S: AsRef<str>>(names: &[S]) -> Result<Vec<Rule>, NormalizeError> {
        let mut rules = Vec::new();
        for n in names {
            match n.as_ref() {
                "all" => rules.extend(Rule::ALL),
                n => rules.push(
                    Rule::from_name(n).ok_or_else(|| NormalizeError::UnknownRule(n.to_string()))?,
                ),
            }
        }
        Ok(rules)
    }
}

/// The known rule names, comma-separated, then `all`.
fn known_rules() -> String {
    let mut s = Rule::ALL.map(Rule::name).join(", ");
    s.push_str(", all");
    s
}

/// How values are scaled before comparison.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Scale {
    /// Fraction of the profile's total for the sample type (default).
    #[default]
    Share,
    /// Per second of the profile's `duration_nanos`.
    Rate,
    /// Divided by a fixed number of units of work per profile.
    PerUnit(f64),
    /// Divided by the profile's total of another (counter) sample type,
    /// e.g. `reconciles`: "CPU per reconcile".
    PerSampleType(String),
    /// Compositional: share of the total, with the candidate's total
    /// rescaled by a size factor estimated from the functions that did not
    /// change (median of ratios refined on the consistent functions, see
    /// [`crate::compare::SizeFactor`]). Values are fractions of the
    /// *baseline's* total per unit of work: an unchanged function keeps its
    /// value, a regression adds to the candidate's sum.
    Compositional,
}

impl std::fmt::Display for Scale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scale::Share => write!(f, "share"),
            Scale::Rate => write!(f, "rate"),
            Scale::PerUnit(n) => write!(f, "per {n}"),
            Scale::PerSampleType(t) => write!(f, "per {t}"),
            Scale::Compositional => write!(f, "compositional"),
        }
    }
}

/// A user rewrite: `REGEX=>REPLACEMENT` applied to normalized names.
#[derive(Debug, Clone)]
pub struct Rewrite {
    /// The pattern.
    pub pattern: Regex,
    /// The replacement (`$1` etc. allowed).
    pub replacement: String,
}

impl Rewrite {
    /// Parse `REGEX=>REPLACEMENT`.
    pub fn parse(spec: &str) -> Result<Rewrite, NormalizeError> {
        let (re, rep) = spec
            .split_once("=>")
            .ok_or_else(|| NormalizeError::BadRewrite(spec.to_string()))?;
        Ok(Rewrite {
            pattern: Regex::new(re).map_err(|e| NormalizeError::BadRegex(re.to_string(), e))?,
            replacement: rep.to_string(),
        })
    }
}

/// Errors from building normalization options.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NormalizeError {
    /// An unknown rule name was given to `--no-normalize` (the message
    /// lists [`Rule::ALL`]'s names and `all`).
    #[error("unknown rule {name:?} (known: {known})", name = .0, known = known_rules())]
    UnknownRule(String),
    /// A rewrite lacked `=>`.
    #[error("rewrite {0:?} is not of the form REGEX=>REPLACEMENT")]
    BadRewrite(String),
    /// A regular expression did not compile.
    #[error("invalid regular expression {0:?}: {1}")]
    BadRegex(String, regex::Error),
    /// The requested sample type is not in a profile.
    #[error("sample type {0:?} not found (available: {1})")]
    NoSampleType(String, String),
}

/// Options controlling normalization; [`Default`] enables every rule.
#[derive(Debug, Clone, Default)]
pub struct NormalizeOptions {
    /// Rules switched off.
    pub disabled: Vec<Rule>,
    /// Drop kernel frames.
    pub no_kernel: bool,
    /// User rewrites, applied in order after the built-in rules.
    pub rewrites: Vec<Rewrite>,
    /// Keep only samples with a frame matching.
    pub focus: Option<Regex>,
    /// Drop samples with a frame matching.
    pub ignore: Option<Regex>,
    /// Drop the callees of the leaf-most frame matching.
    pub prune: Option<Regex>,
}

impl NormalizeOptions {
    /// Whether a rule is on.
    pub fn enabled(&self, r: Rule) -> bool {
        !self.disabled.contains(&r)
    }

    /// Human-readable list of what is applied, for reports.
    pub fn describe(&self) -> Vec<String> {
        let mut out: Vec<String> = Rule::ALL
            .iter()
            .filter(|r| self.enabled(**r))
            .map(|r| r.name().to_string())
            .collect();
        if self.no_kernel {
            out.push("no-kernel".into());
        }
        for r in &self.rewrites {
            out.push(format!("rewrite {}=>{}", r.pattern.as_str(), r.replacement));
        }
        if let Some(f) = &self.focus {
            out.push(format!("focus {}", f.as_str()));
        }
        if let Some(f) = &self.ignore {
            out.push(format!("ignore {}", f.as_str()));
        }
        if let Some(f) = &self.prune {
            out.push(format!("prune {}", f.as_str()));
        }
        out
    }
}

/// Compiled normalizer for names and files.
#[derive(Debug)]
pub struct Normalizer {
    opts: NormalizeOptions,
    closure: Regex,
    gowrap: Regex,
    shape_brackets: Regex,
    shape_bare: Regex,
    rust_hash: Regex,
    hex: Regex,
    modcache: Regex,
    version: Regex,
}

/// Frames treated as root noise.
const ROOT_NOISE: &[&str] = &[
    "runtime.goexit",
    "runtime.main",
    "runtime.mstart",
    "runtime.mstart0",
    "runtime.mstart1",
    "runtime.rt0_go",
    "_start",
    "__libc_start_main",
    "__libc_start_call_main",
    "start_thread",
    "clone",
    "clone3",
    "__clone",
    "__clone3",
    "thread_start",
];

impl Normalizer {
    /// Compile the options.
    pub fn new(opts: NormalizeOptions) -> Normalizer {
        let re = |s: &str| Regex::new(s).expect("built-in regex");
        Normalizer {
            opts,
            closure: re(r"\.func\d+(?:\.\d+)*"),
            gowrap: re(r"\.gowrap\d+"),
            shape_brackets: re(r"\[(?:[^\[\]]*go\.shape\.[^\[\]]*|\.\.\.)\]"),
            shape_bare: re(r"go\.shape\.[A-Za-z0-9_*.]+"),
            rust_hash: re(r"::h[0-9a-f]{16}$"),
            hex: re(r"0x[0-9a-fA-F]+"),
            modcache: re(r"^.*/pkg/mod/"),
            version: re(r"@v[0-9][^/]*"),
        }
    }

    /// The options this normalizer was built from.
    pub fn options(&self) -> &NormalizeOptions {
        &self.opts
    }

    /// Normalized function name of a frame.
    pub fn function_name(&self, frame: &Frame) -> String {
        let o = &self.opts;
        let mut s = frame.function.clone();
        if s.is_empty() {
            s = format!("0x{:x}", frame.address);
        }
        if o.enabled(Rule::GoClosure) && s.contains(".func") {
            s = self.closure.replace_all(&s, ".func*").into_owned();
        }
        if o.enabled(Rule::GoClosure) && s.contains(".gowrap") {
            s = self.gowrap.replace_all(&s, ".gowrap*").into_owned();
        }
        if o.enabled(Rule::GoGeneric) && s.contains("go.shape.") {
            s = self.shape_brackets.replace_all(&s, "[...]").into_owned();
            s = self.shape_bare.replace_all(&s, "go.shape.*").into_owned();
        }
        if o.enabled(Rule::GoWrapper) {
            if let Some(t) = s.strip_suffix("-fm") {
                s = t.to_string();
            }
            if let Some(t) = s.strip_suffix(".abi0") {
                s = t.to_string();
            }
        }
        if o.enabled(Rule::RustHash) && s.contains("::h") {
            s = self.rust_hash.replace(&s, "").into_owned();
        }
        if o.enabled(Rule::Vendor) {
            if let Some(i) = s.rfind("/vendor/") {
                s = s[i + "/vendor/".len()..].to_string();
            }
        }
        if o.enabled(Rule::HexAddress) && s.contains("0x") {
            let is_bare = s.starts_with("0x") && s[2..].chars().all(|c| c.is_ascii_hexdigit());
            if is_bare {
                let base = frame.mapping.rsplit('/').next().unwrap_or("");
                s = if base.is_empty() {
                    "0x?".to_string()
                } else {
                    format!("{base}+0x?")
                };
            } else {
                s = self.hex.replace_all(&s, "0x?").into_owned();
            }
        }
        for r in &o.rewrites {
            s = r
                .pattern
                .replace_all(&s, r.replacement.as_str())
                .into_owned();
        }
        s
    }

    /// Normalized file of a frame.
    pub fn file(&self, frame: &Frame) -> String {
        self.file_name(&frame.file)
    }

    /// [`Normalizer::file`] of a file name.
    pub(crate) fn file_name(&self, file: &str) -> String {
        let o = &self.opts;
        let mut s = file.to_owned();
        if o.enabled(Rule::ModuleVersion) {
            if s.contains("/pkg/mod/") {
                s = self.modcache.replace(&s, "").into_owned();
            }
            if s.contains("@v") {
                s = self.version.replace_all(&s, "").into_owned();
            }
        }
        if o.enabled(Rule::Vendor) {
            if let Some(i) = s.rfind("/vendor/") {
                s = s[i + "/vendor/".len()..].to_string();
            }
        }
        s
    }

    /// True when a normalized name is root noise (and the rule is on).
    pub fn is_root_noise(&self, name: &str) -> bool {
        self.opts.enabled(Rule::RootNoise) && ROOT_NOISE.contains(&name)
    }

    /// True when a normalized name is Go's asynchronous preemption entry,
    /// folded into its caller when it is the leaf (and the rule is on).
    /// The runtime makes a goroutine it preempts (for a stack scan or a
    /// time slice) call `runtime.asyncPreempt` at the instruction it was
    /// running; a `runtime/pprof` sample delivered right after the
    /// preemption signal lands on that call's first instruction, so the
    /// caller's own time moves there in proportion to how often the
    /// garbage collector preempts. Measured on one unchanged loop of the
    /// regress workload: 24% of all samples in `runtime.asyncPreempt` on one
    /// side, 10% on the other, while the loop's inclusive value stayed
    /// within 8%.
    pub fn is_preempt(&self, name: &str) -> bool {
        self.opts.enabled(Rule::GoPreempt) && name == "runtime.asyncPreempt"
    }
}

/// FxHash: fast non-cryptographic hashing for integer keys (the pprof
/// crate's, shared by the decoder and the comparison).
pub use profiler_pprof::hash::FxHasher;

/// A `HashMap` with [`FxHasher`].
pub type FxMap<K, V> = HashMap<K, V, FxBuildHasher>;

/// Builds [`FxHasher`]s.
pub type FxBuildHasher = BuildHasherDefault<FxHasher>;

/// Id of a normalized function in a [`FuncTable`].
pub type FuncId = u32;

/// A normalized function.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Func {
    /// Normalized name.
    pub name: String,
    /// Normalized file (may be empty).
    pub file: String,
}

/// Interner for normalized functions shared by every profile of a comparison.
#[derive(Debug, Default, Clone)]
pub struct FuncTable {
    /// Function ids by the hash of their (name, file): the strings are
    /// kept once, in `funcs`.
    index: hashbrown::HashTable<FuncId>,
    /// Functions by id.
    pub funcs: Vec<Func>,
}

impl FuncTable {
    fn hash(name: &str, file: &str) -> u64 {
        FxBuildHasher::default().hash_one((name, file))
    }

    /// Intern a function.
    pub fn intern(&mut self, name: String, file: String) -> FuncId {
        let hash = Self::hash(&name, &file);
        let FuncTable { index, funcs } = self;
        let found = index.find(hash, |&id| {
            let f = &funcs[id as usize];
            f.name == name && f.file == file
        });
        if let Some(&id) = found {
            return id;
        }
        let next = funcs.len() as FuncId;
        funcs.push(Func { name, file });
        index.insert_unique(hash, next, |&id| {
            let f = &funcs[id as usize];
            Self::hash(&f.name, &f.file)
        });
        next
    }

    /// Room for `additional` more functions without growing.
    pub fn reserve(&mut self, additional: usize) {
        let FuncTable { index, funcs } = self;
        funcs.reserve(additional);
        index.reserve(additional, |&id| {
            let f = &funcs[id as usize];
            Self::hash(&f.name, &f.file)
        });
    }

    /// Number of functions.
    pub fn len(&self) -> usize {
        self.funcs.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.funcs.is_empty()
    }

    /// Display name of a function: its name, plus the file when two
    /// functions share a name.
    pub fn display(&self, id: FuncId) -> String {
        self.funcs[id as usize].name.clone()
    }
}

/// One profile reduced to normalized stacks for one sample type.
#[derive(Debug, Clone)]
pub struct RunData {
    /// Where it came from (file path), for reports.
    pub source: String,
    /// Sum of the selected sample type over kept samples (value units).
    pub total: f64,
    /// Value of one sample (the profile's period when its unit matches, else
    /// the smallest positive value): converts values to sample counts.
    pub weight: f64,
    /// Duration in seconds (0 when unknown).
    pub duration_secs: f64,
    /// Total of every sample type, by kind, over all samples (for `per` scaling).
    pub type_totals: Vec<(String, f64)>,
    /// Value per normalized stack (root first), in first-seen order.
    pub stacks: Stacks,
    /// Multiplier of `total` under [`Scale::Compositional`]: 1 for baseline
    /// runs, the estimated size factor for candidate runs (set by
    /// [`crate::compare::Comparison::new`]).
    pub size_factor: f64,
}

impl RunData {
    /// Total of another sample type by kind (or `kind/unit`).
    pub fn type_total(&self, name: &str) -> Option<f64> {
        self.type_totals
            .iter()
            .find(|(k, _)| k == name || k.split('/').next() == Some(name))
            .map(|(_, v)| *v)
    }

    /// Flat (self) value per function, indexed by [`FuncId`] (length `n`).
    pub fn flat(&self, n: usize) -> Vec<f64> {
        let mut out = vec![0.0; n];
        for (s, v) in &self.stacks {
            if let Some(&leaf) = s.last() {
                out[leaf as usize] += v;
            }
        }
        out
    }

    /// [`RunData::flat`] and [`RunData::cum`] in one pass over the stacks
    /// (the same sums in the same order).
    pub(crate) fn flat_cum(&self, n: usize) -> (Vec<f64>, Vec<f64>) {
        let mut flat = vec![0.0; n];
        let mut cum = vec![0.0; n];
        let mut seen = vec![u32::MAX; n];
        for (i, (s, v)) in self.stacks.iter().enumerate() {
            if let Some(&leaf) = s.last() {
                flat[leaf as usize] += v;
            }
            for &f in s.iter() {
                if seen[f as usize] != i as u32 {
                    seen[f as usize] = i as u32;
                    cum[f as usize] += v;
                }
            }
        }
        (flat, cum)
    }

    /// Cumulative value per function, counted once per stack even under recursion.
    pub fn cum(&self, n: usize) -> Vec<f64> {
        let mut out = vec![0.0; n];
        let mut seen = vec![u32::MAX; n];
        for (i, (s, v)) in self.stacks.iter().enumerate() {
            for &f in s.iter() {
                if seen[f as usize] != i as u32 {
                    seen[f as usize] = i as u32;
                    out[f as usize] += v;
                }
            }
        }
        out
    }
}

/// Find the index of a sample type by `kind` or `kind/unit`; `None` picks the
/// profile's default sample type, else the last one (pprof's choice).
pub fn select_sample_type(p: &Profile, name: Option<&str>) -> Result<usize, NormalizeError> {
    select_sample_type_in(&p.sample_types, p.default_sample_type.as_deref(), name)
}

/// [`select_sample_type`] on a profile's sample types and default type.
pub(crate) fn select_sample_type_in(
    sample_types: &[ValueType],
    default_sample_type: Option<&str>,
    name: Option<&str>,
) -> Result<usize, NormalizeError> {
    let avail = || {
        sample_types
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let want = name.or(default_sample_type);
    match want {
        Some(w) => sample_types
            .iter()
            .position(|t| t.kind == w || t.to_string() == w)
            .ok_or_else(|| NormalizeError::NoSampleType(w.to_string(), avail())),
        None if sample_types.is_empty() => {
            Err(NormalizeError::NoSampleType("(any)".into(), avail()))
        }
        None => Ok(sample_types.len() - 1),
    }
}

/// Reduce a profile to normalized stacks for sample type `st`.
pub fn reduce(
    p: &Profile,
    st: usize,
    source: &str,
    norm: &Normalizer,
    table: &mut FuncTable,
) -> RunData {
    Prepared::new(p, norm, table).reduce(p, st, source)
}

/// A profile's frames mapped to interned functions, with the per-function
/// flags of the normalizer's filters: the part of [`reduce`] that needs the
/// shared [`FuncTable`]. The per-sample pass ([`Prepared::reduce`]) reads
/// only the profile and this, so runs can reduce on several threads while
/// function ids stay those of a sequential [`reduce`].
pub(crate) struct Prepared {
    /// Function id per frame (None = dropped kernel frame).
    frame_func: Vec<Option<FuncId>>,
    focus: Option<Vec<bool>>,
    ignore: Option<Vec<bool>>,
    prune: Option<Vec<bool>>,
    noise: Vec<bool>,
    /// Per function: a leaf to fold into its caller ([`Rule::GoPreempt`]).
    preempt: Vec<bool>,
    kernel_id: Option<FuncId>,
    root_id: FuncId,
}

/// A profile's frames normalized to (name, file), each distinct one once,
/// in first-seen order: the part of [`Prepared::new`] that does not need
/// the shared [`FuncTable`], so it can run on any thread.
pub(crate) struct Names {
    /// Index into `distinct` per frame (`u32::MAX` = dropped kernel frame).
    frame_name: Vec<u32>,
    /// Normalized (name, file), in first-seen order.
    distinct: Vec<(String, String)>,
}

impl Names {
    /// Names from parts built elsewhere: the index into `distinct` of
    /// every frame (`u32::MAX` = dropped kernel frame) and the normalized
    /// (name, file) pairs in first-seen order.
    pub(crate) fn from_parts(frame_name: Vec<u32>, distinct: Vec<(String, String)>) -> Names {
        Names {
            frame_name,
            distinct,
        }
    }

    /// Normalizes the frames of `p`.
    pub(crate) fn new(p: &Profile, norm: &Normalizer) -> Names {
        let opts = norm.options();
        let mut frame_name: Vec<u32> = Vec::with_capacity(p.frames.len());
        let mut distinct: Vec<(String, String)> = Vec::new();
        // Frames differing only by line or address normalize alike: normalize
        // each (function, mapping, file) once (the address matters only for
        // unnamed frames). Two keys may normalize alike: interning merges them.
        let mut memo: FxMap<(&str, &str, &str, u64), u32> = FxMap::default();
        // Many functions share a file: each file is normalized once.
        let mut files: FxMap<&str, String> = FxMap::default();
        for f in &p.frames {
            if opts.no_kernel && f.kind == FrameKind::Kernel {
                frame_name.push(u32::MAX);
                continue;
            }
            let addr = if f.function.is_empty() { f.address } else { 0 };
            let key = (
                f.function.as_str(),
                f.mapping.as_str(),
                f.file.as_str(),
                addr,
            );
            let k = *memo.entry(key).or_insert_with(|| {
                let file = files
                    .entry(f.file.as_str())
                    .or_insert_with(|| norm.file_name(&f.file))
                    .clone();
                distinct.push((norm.function_name(f), file));
                (distinct.len() - 1) as u32
            });
            frame_name.push(k);
        }
        Names {
            frame_name,
            distinct,
        }
    }
}

impl Prepared {
    /// Interns `p`'s functions into `table` (in frame order, then
    /// `[kernel]` with `--no-kernel`, then `[root]`).
    pub(crate) fn new(p: &Profile, norm: &Normalizer, table: &mut FuncTable) -> Prepared {
        Prepared::from_names(Names::new(p, norm), norm, table)
    }

    /// [`Prepared::new`] from names normalized beforehand (on any thread).
    pub(crate) fn from_names(names: Names, norm: &Normalizer, table: &mut FuncTable) -> Prepared {
        let opts = norm.options();
        // Interned in first-seen order: the ids a frame-by-frame pass gives.
        table.reserve(names.distinct.len() + 2);
        let ids: Vec<FuncId> = names
            .distinct
            .into_iter()
            .map(|(name, file)| table.intern(name, file))
            .collect();
        let frame_func: Vec<Option<FuncId>> = names
            .frame_name
            .iter()
            .map(|&k| (k != u32::MAX).then(|| ids[k as usize]))
            .collect();
        // Per-function flags (table may hold functions from other profiles).
        let flag = |re: &Option<Regex>| -> Option<Vec<bool>> {
            re.as_ref()
                .map(|re| table.funcs.iter().map(|f| re.is_match(&f.name)).collect())
        };
        let focus = flag(&opts.focus);
        let ignore = flag(&opts.ignore);
        let prune = flag(&opts.prune);
        let noise: Vec<bool> = table
            .funcs
            .iter()
            .map(|f| norm.is_root_noise(&f.name))
            .collect();
        let preempt: Vec<bool> = table
            .funcs
            .iter()
            .map(|f| norm.is_preempt(&f.name))
            .collect();
        let kernel_id = opts
            .no_kernel
            .then(|| table.intern("[kernel]".into(), String::new()));
        let root_id = table.intern("[root]".into(), String::new());
        Prepared {
            frame_func,
            focus,
            ignore,
            prune,
            noise,
            preempt,
            kernel_id,
            root_id,
        }
    }

    /// Function id of frame `i` (None = dropped kernel frame).
    #[inline]
    pub(crate) fn frame_func(&self, i: usize) -> Option<FuncId> {
        self.frame_func.get(i).copied().flatten()
    }

    /// Applies the normalizer's filters to one sample's functions (`buf`,
    /// leaf first; `dropped_kernel` when a kernel frame was dropped): root
    /// noise, a preemption leaf, focus, ignore, prune, the `[kernel]`/`[root]` stand-in for an
    /// empty stack, then reverses `buf` to root first. False when the
    /// sample is filtered out.
    #[inline]
    pub(crate) fn finish_stack(&self, buf: &mut Vec<FuncId>, dropped_kernel: bool) -> bool {
        let Prepared {
            focus,
            ignore,
            prune,
            noise,
            preempt,
            kernel_id,
            root_id,
            ..
        } = self;
        // Root noise at the root end (buf is leaf first).
        while let Some(&last) = buf.last() {
            if noise.get(last as usize).copied().unwrap_or(false) {
                buf.pop();
            } else {
                break;
            }
        }
        // A preemption leaf counts as its caller's own time.
        if buf.len() > 1 && preempt.get(buf[0] as usize).copied().unwrap_or(false) {
            buf.remove(0);
        }
        if let Some(f) = focus {
            if !buf.iter().any(|&x| f[x as usize]) {
                return false;
            }
        }
        if let Some(f) = ignore {
            if buf.iter().any(|&x| f[x as usize]) {
                return false;
            }
        }
        if let Some(f) = prune {
            if let Some(i) = buf.iter().position(|&x| f[x as usize]) {
                buf.drain(..i);
            }
        }
        if buf.is_empty() {
            buf.push(match (dropped_kernel, *kernel_id) {
                (true, Some(k)) => k,
                _ => *root_id,
            });
        }
        buf.reverse();
        true
    }

    /// The per-sample pass of [`reduce`].
    pub(crate) fn reduce(&self, p: &Profile, st: usize, source: &str) -> RunData {
        let frame_func = &self.frame_func;
        let weight = {
            let t = &p.sample_types[st];
            match &p.period_type {
                Some(pt) if pt.unit == t.unit && p.period > 0 => p.period as f64,
                _ => p
                    .samples
                    .iter()
                    .filter_map(|s| s.values.get(st).copied())
                    .filter(|&v| v > 0)
                    .min()
                    .unwrap_or(1) as f64,
            }
        };
        let mut type_totals: Vec<(String, f64)> = p
            .sample_types
            .iter()
            .map(|t| (t.kind.clone(), 0.0))
            .collect();
        let mut stacks = Stacks::new();
        let mut buf: Vec<FuncId> = Vec::with_capacity(128);
        let mut total = 0.0;
        for s in &p.samples {
            for (i, v) in s.values.iter().enumerate() {
                if let Some(t) = type_totals.get_mut(i) {
                    t.1 += *v as f64;
                }
            }
            let v = match s.values.get(st) {
                Some(&v) if v != 0 => v as f64,
                _ => continue,
            };
            buf.clear();
            let mut dropped_kernel = false;
            for &fid in &s.stack {
                match frame_func.get(fid as usize).copied().flatten() {
                    Some(f) => buf.push(f),
                    None => dropped_kernel = true,
                }
            }
            if !self.finish_stack(&mut buf, dropped_kernel) {
                continue;
            }
            total += v;
            stacks.add(&buf, v);
        }
        RunData {
            source: source.to_string(),
            total,
            weight,
            duration_secs: p.duration_nanos as f64 / 1e9,
            type_totals,
            stacks,
            size_factor: 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(name: &str, file: &str) -> Frame {
        Frame {
            function: name.into(),
            file: file.into(),
            ..Default::default()
        }
    }

    fn n(name: &str) -> String {
        Normalizer::new(NormalizeOptions::default()).function_name(&frame(name, ""))
    }

    #[test]
    fn rule_lists_parse_names_and_all_and_name_every_rule_when_unknown() {
        assert_eq!(
            Rule::parse_list(&["vendor", "go-closure"]).unwrap(),
            [Rule::Vendor, Rule::GoClosure]
        );
        assert_eq!(Rule::parse_list(&["all"]).unwrap(), Rule::ALL);
        let e = Rule::parse_list(&["vendor", "bogus"]).unwrap_err();
        assert!(
            matches!(&e, NormalizeError::UnknownRule(n) if n == "bogus"),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(msg.starts_with("unknown rule \"bogus\" (known: "), "{msg}");
        for r in Rule::ALL {
            assert!(msg.contains(r.name()), "{msg} lacks {}", r.name());
        }
        assert!(msg.ends_with(", all)"), "{msg}");
    }

    #[test]
    fn go_closures_and_wrappers() {
        assert_eq!(n("main.(*R).Reconcile.func1"), "main.(*R).Reconcile.func*");
        assert_eq!(n("main.work.func2.3"), "main.work.func*");
        assert_eq!(n("main.work.gowrap1"), "main.work.gowrap*");
        assert_eq!(n("net/http.(*conn).serve-fm"), "net/http.(*conn).serve");
        assert_eq!(n("runtime.memmove.abi0"), "runtime.memmove");
    }

    #[test]
    fn go_generics_rust_hash_vendor_hex() {
        assert_eq!(n("pkg.Map[go.shape.int,go.shape.string]"), "pkg.Map[...]");
        assert_eq!(n("pkg.Map[...]"), "pkg.Map[...]");
        assert_eq!(
            n("<[T] as core::fmt::Debug>::fmt"),
            "<[T] as core::fmt::Debug>::fmt"
        );
        assert_eq!(
            n("core::ptr::drop_in_place::h0123456789abcdef"),
            "core::ptr::drop_in_place"
        );
        assert_eq!(
            n("example.com/app/vendor/k8s.io/client-go/rest.(*Request).Do"),
            "k8s.io/client-go/rest.(*Request).Do"
        );
        assert_eq!(n("foo 0x4a3f10"), "foo 0x?");
        let mut f = frame("0x4a3f10", "");
        f.mapping = "/usr/bin/app".into();
        assert_eq!(
            Normalizer::new(NormalizeOptions::default()).function_name(&f),
            "app+0x?"
        );
    }

    #[test]
    fn files_drop_versions_and_module_cache() {
        let nz = Normalizer::new(NormalizeOptions::default());
        assert_eq!(
            nz.file(&frame(
                "f",
                "/root/go/pkg/mod/k8s.io/client-go@v0.29.0/rest/request.go"
            )),
            "k8s.io/client-go/rest/request.go"
        );
        assert_eq!(
            nz.file(&frame("f", "/src/app/vendor/k8s.io/x/y.go")),
            "k8s.io/x/y.go"
        );
    }

    #[test]
    fn rules_switch_off_individually() {
        let nz = Normalizer::new(NormalizeOptions {
            disabled: vec![Rule::GoClosure],
            ..Default::default()
        });
        assert_eq!(nz.function_name(&frame("a.b.func1-fm", "")), "a.b.func1");
        let rw = NormalizeOptions {
            rewrites: vec![Rewrite::parse(r"^main\.=>app.").unwrap()],
            ..Default::default()
        };
        assert_eq!(
            Normalizer::new(rw).function_name(&frame("main.x", "")),
            "app.x"
        );
        assert!(Rewrite::parse("nope").is_err());
        assert!(Rule::from_name("vendor").is_some());
        assert!(Rule::from_name("bogus").is_none());
    }

    fn profile(folded: &str) -> Profile {
        crate::folded::parse(folded.as_bytes()).expect("folded")
    }

    fn reduced(p: &Profile, opts: NormalizeOptions) -> (RunData, FuncTable) {
        let mut t = FuncTable::default();
        let r = reduce(p, 0, "p", &Normalizer::new(opts), &mut t);
        (r, t)
    }

    fn value(r: &RunData, t: &FuncTable, name: &str, cum: bool) -> f64 {
        let id = t.funcs.iter().position(|f| f.name == name).expect(name);
        let v = if cum { r.cum(t.len()) } else { r.flat(t.len()) };
        v[id]
    }

    #[test]
    fn cum_counts_recursion_once_and_root_noise_is_dropped() {
        let p = profile(
            "runtime.goexit;runtime.main;main.main;f;f;f 10\nruntime.goexit;main.main;g 5\n",
        );
        let (r, t) = reduced(&p, NormalizeOptions::default());
        assert_eq!(r.total, 15.0);
        assert_eq!(value(&r, &t, "f", true), 10.0);
        assert_eq!(value(&r, &t, "f", false), 10.0);
        assert_eq!(value(&r, &t, "main.main", true), 15.0);
        assert!(r
            .stacks
            .keys()
            .all(|s| t.funcs[s[0] as usize].name == "main.main"));
        // Switched off, the runtime frames stay at the root.
        let (r, t) = reduced(
            &p,
            NormalizeOptions {
                disabled: vec![Rule::RootNoise],
                ..Default::default()
            },
        );
        assert_eq!(value(&r, &t, "runtime.goexit", true), 15.0);
    }

    #[test]
    fn a_preemption_leaf_counts_as_its_caller() {
        let p = profile(
            "main.main;main.loop;runtime.asyncPreempt 3\nmain.main;main.loop 7\nruntime.asyncPreempt 2\nmain.main;runtime.asyncPreempt;runtime.asyncPreempt2 1\n",
        );
        let (r, t) = reduced(&p, NormalizeOptions::default());
        assert_eq!(value(&r, &t, "main.loop", false), 10.0);
        assert_eq!(value(&r, &t, "main.loop", true), 10.0);
        // Alone, or with callees of its own, it stays.
        assert_eq!(value(&r, &t, "runtime.asyncPreempt", false), 2.0);
        assert_eq!(value(&r, &t, "runtime.asyncPreempt", true), 3.0);
        let (r, t) = reduced(
            &p,
            NormalizeOptions {
                disabled: vec![Rule::GoPreempt],
                ..Default::default()
            },
        );
        assert_eq!(value(&r, &t, "main.loop", false), 7.0);
        assert_eq!(value(&r, &t, "runtime.asyncPreempt", false), 5.0);
    }

    #[test]
    fn focus_ignore_prune_like_pprof() {
        let p = profile("main;a;x 4\nmain;b;x 6\nmain;b;y 1\n");
        let re = |s: &str| Some(Regex::new(s).unwrap());
        let (r, _) = reduced(
            &p,
            NormalizeOptions {
                focus: re("^a$"),
                ..Default::default()
            },
        );
        assert_eq!(r.total, 4.0);
        let (r, _) = reduced(
            &p,
            NormalizeOptions {
                ignore: re("^a$"),
                ..Default::default()
            },
        );
        assert_eq!(r.total, 7.0);
        let (r, t) = reduced(
            &p,
            NormalizeOptions {
                prune: re("^b$"),
                ..Default::default()
            },
        );
        assert_eq!(value(&r, &t, "b", false), 7.0, "callees of b are dropped");
        assert_eq!(value(&r, &t, "x", false), 4.0);
    }

    #[test]
    fn kernel_frames_dropped_on_request() {
        let mut p = profile("main;read;sys_read 3\nmain;work 2\n");
        for f in &mut p.frames {
            if f.function == "sys_read" {
                f.kind = FrameKind::Kernel;
            }
        }
        let (r, t) = reduced(
            &p,
            NormalizeOptions {
                no_kernel: true,
                ..Default::default()
            },
        );
        assert_eq!(value(&r, &t, "read", false), 3.0);
        assert!(!t.funcs.iter().any(|f| f.name == "sys_read"));
        let (r, t) = reduced(&p, NormalizeOptions::default());
        assert_eq!(value(&r, &t, "sys_read", false), 3.0);
    }
}
