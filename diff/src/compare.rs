//! Comparison of two sets of profiles (baseline and candidate runs).
//!
//! Each profile is reduced to normalized stacks ([`crate::normalize`]);
//! from those come per-function flat (self) and cumulative values (cum
//! counted once per sample even under recursion) and per-stack values.
//! Every entity is tested with [`stats::pooled_test`] on counts pooled
//! across runs (the decision statistic), and, with two or more runs per
//! side, with the Mann–Whitney U test on per-run values plus the
//! Hodges–Lehmann shift and its confidence interval (reported, as in
//! benchstat). Functions below the noise floor on both sides are not tested;
//! the p-values of the others are adjusted with Benjamini–Hochberg.

use serde::Serialize;

use crate::normalize::{
    select_sample_type, FuncId, FuncTable, Names, NormalizeError, Normalizer, Prepared, RunData,
    Scale,
};
use crate::profile::{Profile, ValueType};
use crate::stats::{self, CountModel, RunCount, ShiftEstimate};

/// Errors from building a comparison.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompareError {
    /// One side had no profile.
    #[error("no {0} profiles given")]
    NoProfiles(&'static str),
    /// Sample type selection or another normalization problem, naming the file.
    #[error("{0}: {1}")]
    Normalize(String, NormalizeError),
    /// Two profiles disagree on the selected sample type's unit.
    #[error("{0}: sample type {1} does not match {2} in the first profile")]
    Mismatch(String, String, String),
    /// A scale needs information a profile lacks.
    #[error("{0}: {1}")]
    Scale(String, String),
}

/// Statistical settings for comparisons.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareOptions {
    /// How values are scaled.
    pub scale: Scale,
    /// Functions whose share is below this fraction on both sides are not tested.
    pub noise_floor: f64,
    /// Confidence level of reported intervals.
    pub confidence: f64,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            scale: Scale::Share,
            noise_floor: 0.005,
            confidence: 0.95,
        }
    }
}

/// One run's observation of an entity, before scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Obs {
    /// Value in sample-type units.
    pub value: f64,
    /// Denominator in display units: the run's total (share), seconds (rate) or units of work.
    pub denom: f64,
    /// Value of one sample.
    pub weight: f64,
}

/// The statistics of one entity (a function's flat or cum value, a total,
/// a stack pattern) across the two sides.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metric {
    /// Pooled baseline value in display units (share as a fraction, rate per second, per unit).
    pub baseline: f64,
    /// Pooled candidate value.
    pub candidate: f64,
    /// `candidate - baseline`.
    pub delta: f64,
    /// `delta / baseline` (None when the baseline is 0).
    pub relative: Option<f64>,
    /// Baseline share of the total (for the noise floor).
    pub baseline_share: f64,
    /// Candidate share of the total.
    pub candidate_share: f64,
    /// Two-sided p-value of the pooled count test (None when not tested: below the noise floor).
    pub p_value: Option<f64>,
    /// Benjamini–Hochberg adjusted p-value within its family (set by the caller).
    pub q_value: Option<f64>,
    /// Mann–Whitney two-sided p-value on per-run values (>= 2 runs per side).
    pub mwu_p: Option<f64>,
    /// Hodges–Lehmann shift of per-run values with its interval (>= 2 runs per side).
    pub shift: Option<ShiftEstimate>,
    /// Ratio of per-run medians, candidate over baseline.
    pub median_ratio: Option<f64>,
    /// Estimated dispersion (1 = sampling noise only).
    pub dispersion: f64,
    /// Standard error of `delta` in display units.
    pub se: f64,
    /// Per-run variance factor behind `se`, per unit of exposure, in count units.
    #[serde(skip)]
    pub var_unit: f64,
    /// Mean exposure of one run in count units (samples for share).
    #[serde(skip)]
    pub exposure_per_run: f64,
    /// Display units per count unit of rate.
    #[serde(skip)]
    pub scale_factor: f64,
    /// Runs per side.
    pub runs: (usize, usize),
}

impl Metric {
    /// Exposure per side (samples for share scale, else seconds/units) and
    /// runs per side needed to detect a difference of `delta` display units at
    /// two-sided level `alpha` with 80% power, given the dispersion seen.
    pub fn needed(&self, delta: f64, alpha: f64) -> Option<(f64, u64)> {
        if delta == 0.0 || self.scale_factor <= 0.0 || self.exposure_per_run <= 0.0 {
            return None;
        }
        let d = delta / self.scale_factor;
        let e = stats::exposure_needed(d, self.var_unit * self.dispersion, alpha, 0.8);
        if !e.is_finite() {
            return None;
        }
        let runs = (e / self.exposure_per_run).ceil().max(1.0) as u64;
        Some((e, runs))
    }
}

/// The count model a scale's test uses, and whether its exposure is in
/// samples (`denom / weight`) rather than in display units.
///
/// [`Scale::Compositional`] uses the Poisson model on samples: a candidate
/// value is in baseline units and may exceed 1, which the binomial model
/// cannot express.
pub fn count_model(scale: &Scale) -> (CountModel, bool) {
    match scale {
        Scale::Share => (CountModel::Share, true),
        Scale::Compositional => (CountModel::Rate, true),
        _ => (CountModel::Rate, false),
    }
}

/// Test one entity given per-run observations on both sides.
pub fn test_entity(base: &[Obs], cand: &[Obs], scale: &Scale, confidence: f64) -> Metric {
    test_entity_moderated(base, cand, scale, confidence, None)
}

/// Count-model view of observations: (counts per run, model).
pub fn run_counts(xs: &[Obs], scale: &Scale) -> (Vec<RunCount>, CountModel) {
    let (model, in_samples) = count_model(scale);
    let v = xs
        .iter()
        .map(|o| {
            let w = if o.weight > 0.0 { o.weight } else { 1.0 };
            RunCount {
                count: o.value / w,
                exposure: if in_samples { o.denom / w } else { o.denom },
            }
        })
        .collect();
    (v, model)
}

/// [`test_entity`] with a dispersion prior shared across entities.
pub fn test_entity_moderated(
    base: &[Obs],
    cand: &[Obs],
    scale: &Scale,
    confidence: f64,
    prior: Option<stats::DispersionPrior>,
) -> Metric {
    let (model, in_samples) = count_model(scale);
    let counts = |xs: &[Obs]| -> Vec<RunCount> { run_counts(xs, scale).0 };
    let pooled = |xs: &[Obs]| {
        let (v, d) = xs
            .iter()
            .fold((0.0, 0.0), |(v, d), o| (v + o.value, d + o.denom));
        if d > 0.0 {
            v / d
        } else {
            0.0
        }
    };
    let (ca, cb) = (counts(base), counts(cand));
    let t = stats::pooled_test_moderated(&ca, &cb, model, prior);
    let baseline = pooled(base);
    let candidate = pooled(cand);
    let delta = candidate - baseline;
    let per_run = |xs: &[Obs]| -> Vec<f64> {
        xs.iter()
            .map(|o| {
                if o.denom > 0.0 {
                    o.value / o.denom
                } else {
                    0.0
                }
            })
            .collect()
    };
    let (va, vb) = (per_run(base), per_run(cand));
    let many = va.len() >= 2 && vb.len() >= 2;
    let mwu_p = if many {
        stats::mann_whitney(&va, &vb).map(|m| m.p_value)
    } else {
        None
    };
    let shift = if many {
        stats::hodges_lehmann(&va, &vb, confidence)
    } else {
        None
    };
    let median_ratio = match (stats::median(&va), stats::median(&vb)) {
        (Some(a), Some(b)) if a > 0.0 && many => Some(b / a),
        _ => None,
    };
    let wmean = {
        let all: Vec<f64> = base.iter().chain(cand).map(|o| o.weight).collect();
        if all.is_empty() {
            1.0
        } else {
            all.iter().sum::<f64>() / all.len() as f64
        }
    };
    let scale_factor = if in_samples { 1.0 } else { wmean };
    let n_runs = (ca.len() + cb.len()).max(1) as f64;
    let exposure_per_run = ca.iter().chain(&cb).map(|r| r.exposure).sum::<f64>() / n_runs;
    let (p_value, dispersion, se, var_unit) = match t {
        Some(t) => {
            let r0 = (t.rate_a * ca.iter().map(|r| r.exposure).sum::<f64>()
                + t.rate_b * cb.iter().map(|r| r.exposure).sum::<f64>())
                / ca.iter()
                    .chain(&cb)
                    .map(|r| r.exposure)
                    .sum::<f64>()
                    .max(1e-300);
            let vu = match model {
                CountModel::Share => r0 * (1.0 - r0).max(0.0),
                CountModel::Rate => r0,
            };
            (Some(t.p_value), t.phi, t.se * scale_factor, vu)
        }
        None => (None, 1.0, 0.0, 0.0),
    };
    Metric {
        baseline,
        candidate,
        delta,
        relative: (baseline != 0.0).then(|| delta / baseline),
        baseline_share: 0.0,
        candidate_share: 0.0,
        p_value,
        q_value: None,
        mwu_p,
        shift,
        median_ratio,
        dispersion,
        se,
        var_unit,
        exposure_per_run,
        scale_factor,
        runs: (base.len(), cand.len()),
    }
}

/// Flat and cum statistics of one function.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionDelta {
    /// Function id in [`Comparison::table`].
    #[serde(skip)]
    pub id: FuncId,
    /// Normalized name.
    pub function: String,
    /// Normalized file.
    pub file: String,
    /// Self value.
    pub flat: Metric,
    /// Cumulative value.
    pub cum: Metric,
}

/// One normalized stack's values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StackDelta {
    /// Folded stack, root first, `;`-separated.
    pub stack: String,
    /// Pooled baseline value in display units.
    pub baseline: f64,
    /// Pooled candidate value.
    pub candidate: f64,
    /// Difference.
    pub delta: f64,
}

/// Profiles of both sides reduced for one sample type.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// Normalized functions of both sides.
    pub table: FuncTable,
    /// The selected sample type.
    pub sample_type: ValueType,
    /// Baseline runs.
    pub base: Vec<RunData>,
    /// Candidate runs.
    pub cand: Vec<RunData>,
    /// Normalization applied (for reports).
    pub normalization: Vec<String>,
    /// The candidate's size factor for [`Scale::Compositional`].
    pub size: SizeFactor,
    /// The baseline's edge index for the gate's attribution, when the
    /// lean path built it while the candidate loaded.
    pub(crate) base_edges: Option<crate::gate::SideEdges>,
}

/// Fewest functions seen on both sides for a compositional scale: a
/// profile of a handful of entities (API-load counters, call counts) has
/// no "most functions did not change" to lean on, and keeps plain shares.
pub const MIN_FUNCTIONS: usize = 10;

/// Weighted median of `(value, weight)` pairs (the lower one at a tie).
fn weighted_median(mut v: Vec<(f64, f64)>) -> Option<f64> {
    v.retain(|x| x.1 > 0.0 && x.0.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(|x, y| x.0.total_cmp(&y.0));
    let half = v.iter().map(|x| x.1).sum::<f64>() / 2.0;
    let mut acc = 0.0;
    for (x, w) in &v {
        acc += w;
        if acc >= half {
            return Some(*x);
        }
    }
    v.last().map(|x| x.0)
}

/// What a function tells about the stack it roots (see
/// [`runtime_background`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum RootRole {
    /// Not a Go runtime function.
    Other,
    /// `runtime.goexit`, the root of every goroutine's stack.
    Goexit,
    /// `runtime.main`, which runs the program's `main.main` and its
    /// package initializers.
    Main,
    /// Any other function of package `runtime`.
    Runtime,
}

impl RootRole {
    fn of(name: &str) -> RootRole {
        match name {
            "runtime.goexit" => RootRole::Goexit,
            "runtime.main" => RootRole::Main,
            n if n.starts_with("runtime.") => RootRole::Runtime,
            _ => RootRole::Other,
        }
    }
}

/// Is this stack (root first) the Go runtime's own background work, whose
/// amount follows the allocation rate and the scheduler rather than the
/// program's units of work: a goroutine the runtime started
/// (`runtime.goexit` then a runtime function other than `runtime.main`:
/// the garbage collector's mark workers, the sweeper, the scavenger), or a
/// thread running runtime code from a runtime root (`runtime.mstart`,
/// `runtime.mcall`, `runtime.morestack`; `runtime/pprof`'s `runtime._GC`
/// and `runtime._System`). With `root-noise` on, `runtime.goexit` and
/// `runtime.main` are gone and the first frame decides. Stacks of other
/// programs, and every stack a user goroutine roots, are not.
fn runtime_background(stack: &[FuncId], roles: &[RootRole]) -> bool {
    let role = |f: Option<&FuncId>| f.map_or(RootRole::Other, |&f| roles[f as usize]);
    match role(stack.first()) {
        RootRole::Goexit => role(stack.get(1)) == RootRole::Runtime,
        RootRole::Runtime => true,
        RootRole::Main | RootRole::Other => false,
    }
}

/// The robust scale between the two sides used by [`Scale::Compositional`].
///
/// Estimated on pooled per-function self (flat) sample counts, which
/// partition each side's total. Start: the median of the ratios
/// `share_cand(f) / share_base(f)` weighted by the baseline count (the
/// median-of-ratios idea of DESeq2). Refinement (three rounds): keep the
/// functions whose candidate value, divided by the current factor, is
/// consistent with their baseline value (|z| < 3 under a Poisson model with
/// a dispersion estimated robustly from the median z²), and take the pooled
/// ratio over them. When the consistent functions hold less than half of
/// the baseline's samples the "most work did not change" assumption fails
/// and the factor falls back to 1 (plain shares), flagged in `fallback`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SizeFactor {
    /// Multiplier of the candidate's total: a candidate value in baseline
    /// units is `value / (total * factor)`. Below 1 when the candidate does
    /// more work per unit (its shares of unchanged functions shrank).
    pub factor: f64,
    /// Functions with self samples on both sides (the estimate's candidates).
    pub functions: usize,
    /// Of those, the functions judged unchanged (the reference set).
    pub unchanged: usize,
    /// Fraction of the baseline's samples in the reference set.
    pub baseline_fraction: f64,
    /// True when the estimate was not trusted and 1 was used.
    pub fallback: bool,
    /// How the factor was obtained: `median-of-ratios` (the first
    /// estimate) or `reference` (the pooled ratio of every stack outside
    /// the culprits' subtrees, see [`SizeFactor::from_reference`]).
    pub method: String,
    /// For `reference`: the functions whose stacks were left out.
    pub excluded: Vec<String>,
    /// For `reference`: the Go runtime's background work (garbage
    /// collector, sweeper, scavenger, scheduler; see
    /// [`runtime_background`]) was left out too.
    pub runtime_excluded: bool,
}

impl Default for SizeFactor {
    fn default() -> Self {
        SizeFactor {
            factor: 1.0,
            functions: 0,
            unchanged: 0,
            baseline_fraction: 1.0,
            fallback: true,
            method: "median-of-ratios".into(),
            excluded: Vec::new(),
            runtime_excluded: false,
        }
    }
}

impl SizeFactor {
    /// Estimate the candidate's size factor from pooled flat counts
    /// (`b[i]`, `c[i]` per function, in samples) and the side totals.
    pub fn estimate(b: &[f64], c: &[f64], tb: f64, tc: f64) -> SizeFactor {
        let mut out = SizeFactor::default();
        if tb <= 0.0 || tc <= 0.0 {
            return out;
        }
        let idx: Vec<usize> = (0..b.len().min(c.len()))
            .filter(|&i| b[i] + c[i] > 0.0)
            .collect();
        // Weighted median of the share ratios (baseline counts as weights).
        let ratios: Vec<(f64, f64)> = idx
            .iter()
            .filter(|&&i| b[i] > 0.0)
            .map(|&i| ((c[i] / tc) / (b[i] / tb), b[i]))
            .collect();
        let mut s = match weighted_median(ratios) {
            Some(s) if s.is_finite() && s > 0.0 => s,
            _ => return out,
        };
        const CHI2_1_MEDIAN: f64 = 0.454_936_423_119_572_8;
        // Functions seen on both sides: one seen on a single side is either
        // new work or sampling luck, and says nothing about the scale.
        let both: Vec<usize> = idx
            .iter()
            .copied()
            .filter(|&i| b[i] > 0.0 && c[i] > 0.0)
            .collect();
        out.functions = both.len();
        let mut kept = (0usize, 0.0f64);
        for _ in 0..3 {
            let ec = tc * s;
            let z: Vec<(usize, f64)> = both
                .iter()
                .map(|&i| {
                    let rbar = (b[i] + c[i]) / (tb + ec);
                    let v = rbar * (1.0 / tb + 1.0 / ec);
                    (i, (c[i] / ec - b[i] / tb) / v.sqrt().max(1e-300))
                })
                .collect();
            // Extra-Poisson scatter: the baseline-weighted median of z²
            // (robust to the changed functions while they are a minority
            // of the baseline's samples).
            let z2: Vec<(f64, f64)> = z.iter().map(|&(i, zi)| (zi * zi, b[i])).collect();
            let phi = (weighted_median(z2).unwrap_or(0.0) / CHI2_1_MEDIAN).max(1.0);
            let (mut sb, mut sc, mut n) = (0.0, 0.0, 0usize);
            for (i, zi) in &z {
                if zi.abs() < 3.0 * phi.sqrt() {
                    sb += b[*i];
                    sc += c[*i];
                    n += 1;
                }
            }
            if sb <= 0.0 || sc <= 0.0 {
                return out;
            }
            s = (sc / tc) / (sb / tb);
            kept = (n, sb / tb);
        }
        out.unchanged = kept.0;
        out.baseline_fraction = kept.1;
        if kept.1 >= 0.5 && out.functions >= MIN_FUNCTIONS && s.is_finite() && s > 0.0 {
            out.factor = s;
            out.fallback = false;
        }
        out
    }

    /// The factor as the pooled ratio of shares of every stack through none
    /// of the `excluded` functions (the culprits found on a first pass):
    /// what is outside the regression's subtrees did the same work per
    /// unit. The Go runtime's background work ([`runtime_background`]) is
    /// left out as well: it follows the allocation rate and the scheduler,
    /// which a regression changes, not the units of work.
    /// When the reference without them is too small, they are kept. Falls
    /// back (returns `None`) when the reference holds less than 10% or
    /// fewer than 30 samples of either side.
    pub fn from_reference(cmp: &Comparison, exclude: &[bool]) -> Option<SizeFactor> {
        let roles: Vec<RootRole> = cmp
            .table
            .funcs
            .iter()
            .map(|f| RootRole::of(&f.name))
            .collect();
        // Per side (kept, kept outside the runtime's background, total);
        // the sides sum on one thread each.
        let side = |runs: &[RunData]| -> [f64; 3] {
            let (mut kept, mut user, mut tot) = (0.0f64, 0.0f64, 0.0f64);
            for r in runs {
                let w = if r.weight > 0.0 { r.weight } else { 1.0 };
                for (st, v) in &r.stacks {
                    if !st
                        .iter()
                        .any(|&f| exclude.get(f as usize).copied().unwrap_or(false))
                    {
                        kept += v / w;
                        if !runtime_background(st, &roles) {
                            user += v / w;
                        }
                    }
                }
                tot += r.total / w;
            }
            [kept, user, tot]
        };
        let large = cmp.distinct_stacks() >= 4096;
        let (b, c) = if large {
            std::thread::scope(|s| {
                let c = s.spawn(|| side(&cmp.cand));
                let b = side(&cmp.base);
                (b, c.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            })
        } else {
            (side(&cmp.base), side(&cmp.cand))
        };
        let tot = [b[2], c[2]];
        let enough =
            |k: [f64; 2]| (0..2).all(|i| k[i] >= 30.0 && tot[i] > 0.0 && k[i] >= 0.1 * tot[i]);
        let (kept, runtime_excluded) = if enough([b[1], c[1]]) {
            ([b[1], c[1]], b[1] < b[0] || c[1] < c[0])
        } else if enough([b[0], c[0]]) {
            ([b[0], c[0]], false)
        } else {
            return None;
        };
        let factor = (kept[1] / tot[1]) / (kept[0] / tot[0]);
        let excluded: Vec<String> = {
            let mut v: Vec<String> = cmp
                .table
                .funcs
                .iter()
                .enumerate()
                .filter(|(i, _)| exclude.get(*i).copied().unwrap_or(false))
                .map(|(_, f)| f.name.clone())
                .collect();
            v.dedup();
            v
        };
        Some(SizeFactor {
            factor,
            functions: 0,
            unchanged: 0,
            baseline_fraction: kept[0] / tot[0],
            fallback: false,
            method: "reference".into(),
            excluded,
            runtime_excluded,
        })
    }

    /// One line for reports: what the scale is and how it was obtained.
    pub fn describe(&self) -> String {
        if self.fallback && self.functions < MIN_FUNCTIONS {
            return format!(
                "share (compositional scale not estimable: {} functions on both sides, need {MIN_FUNCTIONS})",
                self.functions
            );
        }
        if self.fallback {
            return format!(
                "share (compositional scale not estimable: the functions consistent with one scale hold {:.0}% of the baseline, need 50%)",
                self.baseline_fraction * 100.0
            );
        }
        let head = format!(
            "compositional (candidate total {:+.1}% of the baseline's per unit of work; size factor {:.3}",
            (1.0 / self.factor - 1.0) * 100.0,
            self.factor
        );
        if self.method == "reference" {
            let runtime = if self.runtime_excluded {
                " and the Go runtime's background work"
            } else {
                ""
            };
            format!(
                "{head} from the stacks outside {}{runtime}, {:.0}% of the baseline)",
                self.excluded.join(", "),
                self.baseline_fraction * 100.0
            )
        } else {
            format!(
                "{head}, median of ratios over {} of {} functions)",
                self.unchanged, self.functions
            )
        }
    }
}

/// One run to reduce: the profile, its sample type, its source and its
/// prepared functions.
type Job<'p> = (&'p Profile, usize, &'p str, Prepared);

/// One function's part of [`Comparison::functions`]' first pass.
struct PerFunction {
    /// Seen on either side (cumulative value not zero everywhere).
    tested: bool,
    /// Jitter moments per family (flat, cum), when tested and above the
    /// noise floor.
    moments: [Option<(f64, f64)>; 2],
    /// The robust-jitter item per family (one run per side only).
    items: [Option<(RunCount, RunCount)>; 2],
}

/// Fewest tested functions for which [`Comparison::functions`] tests on
/// two threads.
const PARALLEL_TESTS: usize = 2_048;

/// Fewest stacks (over all runs) for which [`Comparison::stacks`] scans
/// on two threads.
const PARALLEL_STACKS: usize = 8_192;

/// Largest `limit` for which [`Comparison::stacks`] keeps its top stacks
/// in a sorted vector while it scans (above it, it selects at the end).
const TOP_STACKS_BOUNDED: usize = 64;

/// `f` over `items` on up to one thread per core; the result is in item
/// order and does not depend on the scheduling.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<R>>> =
        items.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(x) = items.get(i) else { break };
                let r = f(x);
                *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            });
        }
    });
    slots
        .into_iter()
        .zip(items)
        .map(|(slot, x)| {
            // Every slot is filled above (a panic in a thread propagates
            // out of the scope); a missing one is computed here.
            slot.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or_else(|| f(x))
        })
        .collect()
}

impl Comparison {
    /// Reduce both sides for `sample_type` (None: each profile's default).
    pub fn new<'p>(
        base: &'p [(String, &'p Profile)],
        cand: &'p [(String, &'p Profile)],
        sample_type: Option<&str>,
        norm: &Normalizer,
    ) -> Result<Comparison, CompareError> {
        if base.is_empty() {
            return Err(CompareError::NoProfiles("baseline"));
        }
        if cand.is_empty() {
            return Err(CompareError::NoProfiles("candidate"));
        }
        let mut table = FuncTable::default();
        let mut first: Option<ValueType> = None;
        // Frame names normalized per run in parallel, interned below in order.
        let profiles: Vec<&Profile> = base.iter().chain(cand).map(|(_, p)| *p).collect();
        let mut names = par_map(&profiles, |p| Names::new(p, norm)).into_iter();
        // Functions are interned run by run, in order (ids do not depend on
        // threads); the per-sample passes then run in parallel.
        let mut side = |xs: &'p [(String, &'p Profile)]| -> Result<Vec<Job<'p>>, CompareError> {
            let mut out = Vec::with_capacity(xs.len());
            for (path, p) in xs {
                // Once the first profile fixed the type, match the rest by kind.
                let want = first.as_ref().map(|t| t.kind.clone());
                let st = select_sample_type(p, want.as_deref().or(sample_type))
                    .map_err(|e| CompareError::Normalize(path.clone(), e))?;
                let t = &p.sample_types[st];
                match &first {
                    None => first = Some(t.clone()),
                    Some(f) if f.unit != t.unit => {
                        return Err(CompareError::Mismatch(
                            path.clone(),
                            t.to_string(),
                            f.to_string(),
                        ))
                    }
                    _ => {}
                }
                let names = names.next().unwrap_or_else(|| Names::new(p, norm));
                out.push((
                    *p,
                    st,
                    path.as_str(),
                    Prepared::from_names(names, norm, &mut table),
                ));
            }
            Ok(out)
        };
        let jb = side(base)?;
        let jc = side(cand)?;
        let jobs: Vec<&Job<'p>> = jb.iter().chain(&jc).collect();
        let mut runs = par_map(&jobs, |j| j.3.reduce(j.0, j.1, j.2));
        let c = runs.split_off(jb.len());
        Ok(Comparison::assemble(
            table,
            first.unwrap_or_default(),
            runs,
            c,
            norm,
        ))
    }

    /// [`Comparison::new`] straight from pprof files (gzip'd or not, given
    /// by path; `base` and `cand` are the sources the runs are named by):
    /// each file decodes and reduces on its own thread without building a
    /// [`Profile`], and the result is the comparison [`Comparison::new`]
    /// gives on the files loaded with [`crate::input::load_many`].
    ///
    /// Returns `None` when this path does not apply: a file that is not a
    /// pprof protobuf (legacy or folded formats), more than 16 files, or
    /// any error (unreadable or malformed file, missing or mismatched sample
    /// type). The caller then loads the profiles and calls
    /// [`Comparison::new`], which handles or reports it.
    pub fn from_pprof_files(
        base: &[String],
        cand: &[String],
        sample_type: Option<&str>,
        norm: &Normalizer,
    ) -> Option<Comparison> {
        let r = crate::fastload::reduce_files(base, cand, sample_type, norm)?;
        let mut cmp = Comparison::assemble(r.table, r.sample_type, r.base, r.cand, norm);
        cmp.base_edges = r.base_edges;
        Some(cmp)
    }

    /// The comparison of reduced runs: the candidate's size factor.
    fn assemble(
        table: FuncTable,
        sample_type: ValueType,
        b: Vec<RunData>,
        mut c: Vec<RunData>,
        norm: &Normalizer,
    ) -> Comparison {
        let size = {
            let n = table.len();
            let pool = |runs: &[RunData]| -> (Vec<f64>, f64) {
                let mut acc = vec![0.0; n];
                let mut tot = 0.0;
                for r in runs {
                    let w = if r.weight > 0.0 { r.weight } else { 1.0 };
                    for (s, v) in &r.stacks {
                        if let Some(&leaf) = s.last() {
                            acc[leaf as usize] += v / w;
                        }
                    }
                    tot += r.total / w;
                }
                (acc, tot)
            };
            let (fb, tb) = pool(&b);
            let (fc, tc) = pool(&c);
            SizeFactor::estimate(&fb, &fc, tb, tc)
        };
        for r in &mut c {
            r.size_factor = size.factor;
        }
        Comparison {
            table,
            sample_type,
            base: b,
            cand: c,
            normalization: norm.options().describe(),
            size,
            base_edges: None,
        }
    }

    /// Use another size factor for [`Scale::Compositional`] (its factor
    /// multiplies every candidate run's total).
    pub fn set_size_factor(&mut self, size: SizeFactor) {
        for r in &mut self.cand {
            r.size_factor = size.factor;
        }
        self.size = size;
    }

    /// Distinct stacks of every run of both sides (a stack in several
    /// runs counts once per run): the size that decides whether work is
    /// split over threads.
    pub(crate) fn distinct_stacks(&self) -> usize {
        self.base
            .iter()
            .chain(&self.cand)
            .map(|r| r.stacks.len())
            .sum()
    }

    /// Denominator of a run for a scale (display units), or an error naming the run.
    pub fn denom(run: &RunData, scale: &Scale) -> Result<f64, CompareError> {
        match scale {
            Scale::Share => Ok(run.total),
            Scale::Compositional => Ok(run.total * run.size_factor),
            Scale::Rate if run.duration_secs > 0.0 => Ok(run.duration_secs),
            Scale::Rate => Err(CompareError::Scale(
                run.source.clone(),
                "profile has no duration; rate scaling needs duration_nanos".into(),
            )),
            Scale::PerUnit(n) if *n > 0.0 => Ok(*n),
            Scale::PerUnit(n) => Err(CompareError::Scale(
                run.source.clone(),
                format!("--per must be positive, got {n}"),
            )),
            Scale::PerSampleType(t) => match run.type_total(t) {
                Some(v) if v > 0.0 => Ok(v),
                Some(_) => Err(CompareError::Scale(
                    run.source.clone(),
                    format!("sample type {t:?} totals 0; cannot divide by it"),
                )),
                None => Err(CompareError::Scale(
                    run.source.clone(),
                    format!(
                        "no sample type {t:?} to divide by (available: {})",
                        run.type_totals
                            .iter()
                            .map(|x| x.0.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
            },
        }
    }

    /// Observations of an entity whose per-run value is `f(run)`.
    pub fn observe(
        &self,
        scale: &Scale,
        mut f: impl FnMut(&RunData) -> f64,
    ) -> Result<(Vec<Obs>, Vec<Obs>), CompareError> {
        let mut side = |runs: &[RunData]| -> Result<Vec<Obs>, CompareError> {
            runs.iter()
                .map(|r| {
                    Ok(Obs {
                        value: f(r),
                        denom: Self::denom(r, scale)?,
                        weight: r.weight,
                    })
                })
                .collect()
        };
        let b = side(&self.base)?;
        let c = side(&self.cand)?;
        Ok((b, c))
    }

    /// Share of the total of an entity on each side.
    fn shares(&self, fb: &[f64], fc: &[f64]) -> (f64, f64) {
        let tb: f64 = self.base.iter().map(|r| r.total).sum();
        let tc: f64 = self.cand.iter().map(|r| r.total).sum();
        let sb: f64 = fb.iter().sum();
        let sc: f64 = fc.iter().sum();
        (
            if tb > 0.0 { sb / tb } else { 0.0 },
            if tc > 0.0 { sc / tc } else { 0.0 },
        )
    }

    /// Per-function flat and cum statistics, sorted by decreasing |flat delta|
    /// then name. Functions below `noise_floor` share on both sides carry no
    /// p-value; q-values are BH-adjusted within flat and within cum.
    pub fn functions(&self, opts: &CompareOptions) -> Result<Vec<FunctionDelta>, CompareError> {
        let n = self.table.len();
        // Per-run flat and cum values: the candidate's on a second thread.
        let sums = |runs: &[RunData]| -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
            runs.iter().map(|r| r.flat_cum(n)).unzip()
        };
        let ((flat_b, cum_b), (flat_c, cum_c)) = std::thread::scope(|s| {
            let c = s.spawn(|| sums(&self.cand));
            let b = sums(&self.base);
            (b, c.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        });
        let denb: Vec<f64> = self
            .base
            .iter()
            .map(|r| Self::denom(r, &opts.scale))
            .collect::<Result<_, _>>()?;
        let denc: Vec<f64> = self
            .cand
            .iter()
            .map(|r| Self::denom(r, &opts.scale))
            .collect::<Result<_, _>>()?;
        let obs = |vals: &[Vec<f64>], runs: &[RunData], den: &[f64], id: usize| -> Vec<Obs> {
            vals.iter()
                .zip(runs)
                .zip(den)
                .map(|((v, r), d)| Obs {
                    value: v[id],
                    denom: *d,
                    weight: r.weight,
                })
                .collect()
        };
        let above = |sb: &[f64], sc: &[f64]| {
            let (x, y) = self.shares(sb, sc);
            !(x < opts.noise_floor && y < opts.noise_floor)
        };
        let col =
            |vals: &[Vec<f64>], id: usize| -> Vec<f64> { vals.iter().map(|v| v[id]).collect() };
        // A function whose cumulative value equals its self value in every
        // run (a leaf) has its cum test in the flat family already; testing
        // it twice would only add tests (and the leaves' jitter would skew
        // the cum family's common estimate, which is made for aggregates).
        let leaf_only = |id: usize| -> bool {
            flat_b.iter().zip(&cum_b).all(|(f, c)| f[id] == c[id])
                && flat_c.iter().zip(&cum_c).all(|(f, c)| f[id] == c[id])
        };
        // Per function (independent, so a large comparison takes its two
        // halves on two threads): tested at all, its jitter moments and,
        // with one run per side, its robust-jitter item, per family.
        // They are summed and collected below in function order.
        let single = self.base.len() == 1 && self.cand.len() == 1;
        let fams = [(&flat_b, &flat_c), (&cum_b, &cum_c)];
        let per_function = |id: usize| -> PerFunction {
            let (cb, cc) = (col(&cum_b, id), col(&cum_c, id));
            let tested = !cb.iter().chain(&cc).all(|&x| x == 0.0);
            let mut out = PerFunction {
                tested,
                moments: [None; 2],
                items: [None; 2],
            };
            for (fam, (vb, vc)) in fams.into_iter().enumerate() {
                if !tested && !single {
                    continue;
                }
                let (sb, sc) = (col(vb, id), col(vc, id));
                if !above(&sb, &sc) || (fam == 1 && leaf_only(id)) {
                    continue;
                }
                let (rb, model) = run_counts(&obs(vb, &self.base, &denb, id), &opts.scale);
                let (rc, _) = run_counts(&obs(vc, &self.cand, &denc, id), &opts.scale);
                if tested {
                    out.moments[fam] = stats::jitter_moments(&rb, &rc, model);
                }
                // A function seen on one side only is new (or gone)
                // work, not jitter: a regression brings dozens of them
                // (its library subtree), which would otherwise set the
                // common jitter and hide the regression itself.
                if single
                    && !sb.iter().chain(&sc).all(|&x| x == 0.0)
                    && rb[0].count > 0.0
                    && rc[0].count > 0.0
                {
                    out.items[fam] = Some((rb[0], rc[0]));
                }
            }
            out
        };
        let all: Vec<usize> = (0..n).collect();
        let per: Vec<PerFunction> = if n >= PARALLEL_TESTS {
            let (a, b) = all.split_at(n / 2);
            std::thread::scope(|s| {
                let hb = s.spawn(|| b.iter().map(|&id| per_function(id)).collect::<Vec<_>>());
                let mut out: Vec<PerFunction> = Vec::with_capacity(n);
                out.extend(a.iter().map(|&id| per_function(id)));
                out.extend(hb.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
                out
            })
        } else {
            all.iter().map(|&id| per_function(id)).collect()
        };
        // Pass 1: which functions are tested, and the common jitter of each
        // family (flat, cum) from all of them (moderated dispersion).
        let mut ids = Vec::new();
        let mut moments = [(0.0f64, 0.0f64); 2];
        let mut items: [Vec<(RunCount, RunCount)>; 2] = [Vec::new(), Vec::new()];
        for (id, p) in per.iter().enumerate() {
            if p.tested {
                ids.push(id);
            }
            for fam in 0..2 {
                if let Some((nu, de)) = p.moments[fam] {
                    moments[fam].0 += nu;
                    moments[fam].1 += de;
                }
                if let Some(it) = p.items[fam] {
                    items[fam].push(it);
                }
            }
        }
        let prior_df = 2.0 * (self.base.len() + self.cand.len()).saturating_sub(2) as f64;
        let prior = |fam: usize| {
            let (nu, de) = moments[fam];
            (de > 0.0 && prior_df > 0.0).then(|| stats::DispersionPrior {
                kappa: (nu / de).max(0.0),
                df: prior_df,
            })
        };
        let mut priors = [prior(0), prior(1)];
        // One run per side: no replicate scatter, so estimate the common
        // jitter robustly from how much all tested functions moved.
        if single {
            let model = count_model(&opts.scale).0;
            for fam in 0..2 {
                let kappa = stats::robust_kappa_single(&items[fam], model);
                // Median-based scale: ~37% efficient, so worth 0.37 m degrees of freedom.
                let df = (0.37 * items[fam].len() as f64).max(1.0);
                priors[fam] = (kappa > 0.0).then_some(stats::DispersionPrior { kappa, df });
            }
            // The cum family (aggregates only, see `leaf_only`) may be too
            // small for its own robust estimate: its jitter is at least
            // what the self values show.
            if let Some(f) = priors[0] {
                match priors[1].as_mut() {
                    Some(c) if c.kappa >= f.kappa => {}
                    Some(c) => c.kappa = f.kappa,
                    None => priors[1] = Some(f),
                }
            }
        }
        // Pass 2: the tests, independent per function: a large comparison
        // tests its two halves of the functions on two threads (the
        // records come out in the same order either way).
        let test = |id: usize| -> FunctionDelta {
            let leaf = leaf_only(id);
            let metric = |vb: &[Vec<f64>], vc: &[Vec<f64>], fam: usize| {
                let (sb, sc) = (col(vb, id), col(vc, id));
                let mut m = test_entity_moderated(
                    &obs(vb, &self.base, &denb, id),
                    &obs(vc, &self.cand, &denc, id),
                    &opts.scale,
                    opts.confidence,
                    priors[fam],
                );
                let (x, y) = self.shares(&sb, &sc);
                m.baseline_share = x;
                m.candidate_share = y;
                if (x < opts.noise_floor && y < opts.noise_floor) || (fam == 1 && leaf) {
                    m.p_value = None;
                }
                m
            };
            let f = &self.table.funcs[id];
            FunctionDelta {
                id: id as FuncId,
                function: f.name.clone(),
                file: f.file.clone(),
                flat: metric(&flat_b, &flat_c, 0),
                cum: metric(&cum_b, &cum_c, 1),
            }
        };
        let mut out: Vec<FunctionDelta> = if ids.len() >= PARALLEL_TESTS {
            let (a, b) = ids.split_at(ids.len() / 2);
            std::thread::scope(|s| {
                let hb = s.spawn(|| b.iter().map(|&id| test(id)).collect::<Vec<_>>());
                let mut out: Vec<FunctionDelta> = Vec::with_capacity(ids.len());
                out.extend(a.iter().map(|&id| test(id)));
                out.extend(hb.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
                out
            })
        } else {
            ids.iter().map(|&id| test(id)).collect()
        };
        for pick in [
            (|d: &mut FunctionDelta| -> &mut Metric { &mut d.flat })
                as fn(&mut FunctionDelta) -> &mut Metric,
            |d: &mut FunctionDelta| -> &mut Metric { &mut d.cum },
        ] {
            let idx: Vec<usize> = (0..out.len())
                .filter(|&i| pick(&mut out[i]).p_value.is_some())
                .collect();
            let ps: Vec<f64> = idx
                .iter()
                .map(|&i| pick(&mut out[i]).p_value.unwrap_or(1.0))
                .collect();
            let qs = stats::benjamini_hochberg(&ps);
            for (&i, q) in idx.iter().zip(qs) {
                pick(&mut out[i]).q_value = Some(q);
            }
        }
        // Sorted by index (a stable sort with the same comparisons gives
        // the same order) so that the large records move once.
        // The keys sit side by side, so that the comparisons read no record.
        let mut keys: Vec<(f64, f64, usize)> = out
            .iter()
            .enumerate()
            .map(|(i, d)| (d.flat.delta.abs(), d.cum.delta.abs(), i))
            .collect();
        keys.sort_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then(b.1.total_cmp(&a.1))
                .then_with(|| out[a.2].function.cmp(&out[b.2].function))
        });
        let order: Vec<usize> = keys.into_iter().map(|k| k.2).collect();

        // The permutation applied in place, one cycle at a time (each
        // record moves once per swap; no second vector of records).
        let mut order = order;
        for i in 0..order.len() {
            let mut cur = i;
            loop {
                let next = order[cur];
                order[cur] = cur;
                if next == i || next == cur {
                    break;
                }
                out.swap(cur, next);
                cur = next;
            }
        }

        Ok(out)
    }

    /// The `limit` stacks with the largest |delta|, folded root first.
    pub fn stacks(&self, scale: &Scale, limit: usize) -> Result<Vec<StackDelta>, CompareError> {
        let db: f64 = self
            .base
            .iter()
            .map(|r| Self::denom(r, scale))
            .sum::<Result<f64, _>>()?;
        let dc: f64 = self
            .cand
            .iter()
            .map(|r| Self::denom(r, scale))
            .sum::<Result<f64, _>>()?;
        // A total order (stacks are distinct): largest |delta| first.
        let order = |a: &(&[FuncId], f64, f64), b: &(&[FuncId], f64, f64)| {
            (b.2 - b.1)
                .abs()
                .total_cmp(&(a.2 - a.1).abs())
                .then_with(|| a.0.cmp(b.0))
        };
        // Every distinct stack once, at its first run (baseline runs, then
        // candidate runs): its values are looked up in the runs' own maps
        // (no merged map), summed per side in run order from 0.0 as a
        // merged map would. Only the `limit` first in `order` are kept, in
        // a sorted vector (a small limit) or selected at the end.
        let runs: Vec<(&RunData, bool)> = self
            .base
            .iter()
            .map(|r| (r, false))
            .chain(self.cand.iter().map(|r| (r, true)))
            .collect();
        let bounded = limit <= TOP_STACKS_BOUNDED;
        // One half of the entries (by position in each run's map, `parts`
        // halves in all); each stack is in exactly one half.
        let scan = |part: usize, parts: usize| -> Vec<(&[FuncId], f64, f64)> {
            let mut v: Vec<(&[FuncId], f64, f64)> = Vec::new();
            if bounded {
                v.reserve(limit + 1);
            }
            for (i, &(r, _)) in runs.iter().enumerate() {
                for (j, (s, &own)) in r.stacks.iter().enumerate() {
                    if j % parts != part {
                        continue;
                    }
                    let s: &[FuncId] = s;
                    if runs[..i].iter().any(|(q, _)| q.stacks.contains_key(s)) {
                        continue;
                    }
                    let (mut b, mut c) = (0.0f64, 0.0f64);
                    for (k, &(q, cand)) in runs.iter().enumerate().skip(i) {
                        let x = if k == i {
                            own
                        } else {
                            match q.stacks.get(s) {
                                Some(&x) => x,
                                None => continue,
                            }
                        };
                        if cand {
                            c += x;
                        } else {
                            b += x;
                        }
                    }
                    let item = (s, b / db.max(1e-300), c / dc.max(1e-300));
                    if !bounded {
                        v.push(item);
                        continue;
                    }
                    if limit == 0
                        || (v.len() == limit
                            && v.last()
                                .is_some_and(|l| order(&item, l) != std::cmp::Ordering::Less))
                    {
                        continue;
                    }
                    let at = v.partition_point(|y| order(y, &item) == std::cmp::Ordering::Less);
                    v.insert(at, item);
                    v.truncate(limit);
                }
            }
            v
        };
        let total: usize = runs.iter().map(|(r, _)| r.stacks.len()).sum();
        let mut v = if total >= PARALLEL_STACKS {
            // Two halves on two threads; the order is total, so the
            // merged halves sort to the same list.
            let (mut a, mut b) = std::thread::scope(|s| {
                let b = s.spawn(|| scan(1, 2));
                (
                    scan(0, 2),
                    b.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
                )
            });
            a.append(&mut b);
            if bounded {
                a.sort_by(order);
                a.truncate(limit);
            }
            a
        } else {
            scan(0, 1)
        };
        if !bounded {
            if limit < v.len() {
                if limit > 0 {
                    v.select_nth_unstable_by(limit - 1, order);
                }
                v.truncate(limit);
            }
            v.sort_by(order);
        }
        Ok(v.into_iter()
            .map(|(s, b, c)| StackDelta {
                stack: self.folded(s),
                baseline: b,
                candidate: c,
                delta: c - b,
            })
            .collect())
    }

    /// Folded text of a stack.
    pub fn folded(&self, s: &[FuncId]) -> String {
        s.iter()
            .map(|&f| self.table.funcs[f as usize].name.as_str())
            .collect::<Vec<_>>()
            .join(";")
    }

    /// Display unit for values under a scale.
    pub fn unit(&self, scale: &Scale) -> String {
        match scale {
            Scale::Share | Scale::Compositional => "%".into(),
            Scale::Rate => format!("{}/s", self.sample_type.unit),
            Scale::PerUnit(n) => format!("{}/{n}", self.sample_type.unit),
            Scale::PerSampleType(t) => format!("{}/{t}", self.sample_type.unit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which stacks [`runtime_background`] calls the runtime's own work,
    /// with `runtime.goexit` at the root and with it dropped (`root-noise`).
    #[test]
    fn runtime_background_is_decided_by_the_roots() {
        let names = [
            "runtime.goexit",
            "runtime.main",
            "main.main",
            "runtime.gcBgMarkWorker",
            "runtime.gcDrain",
            "runtime.mallocgc",
            "runtime.mstart",
            "runtime.schedule",
            "main.worker.func*",
            "_start",
        ];
        let roles: Vec<RootRole> = names.iter().map(|n| RootRole::of(n)).collect();
        let id = |n: &str| names.iter().position(|x| *x == n).unwrap() as FuncId;
        let bg = |stack: &[&str]| {
            let s: Vec<FuncId> = stack.iter().map(|n| id(n)).collect();
            runtime_background(&s, &roles)
        };
        // The runtime's goroutines and threads.
        assert!(bg(&[
            "runtime.goexit",
            "runtime.gcBgMarkWorker",
            "runtime.gcDrain"
        ]));
        assert!(bg(&["runtime.gcBgMarkWorker", "runtime.gcDrain"]));
        assert!(bg(&["runtime.mstart", "runtime.schedule"]));
        assert!(bg(&["runtime.schedule"]));
        // The program's goroutines, even inside the runtime.
        assert!(!bg(&[
            "runtime.goexit",
            "runtime.main",
            "main.main",
            "runtime.mallocgc"
        ]));
        assert!(!bg(&["main.main", "runtime.mallocgc"]));
        assert!(!bg(&[
            "runtime.goexit",
            "main.worker.func*",
            "runtime.mallocgc"
        ]));
        assert!(!bg(&["main.worker.func*"]));
        assert!(!bg(&["runtime.goexit"]));
        // Other programs.
        assert!(!bg(&["_start", "runtime.mallocgc"]));
        assert!(!bg(&[]));
    }
}
