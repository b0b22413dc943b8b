//! The gate: apply budget rules to a comparison and reach a verdict.
//!
//! Decision rules (documented in `docs/profdiff.md`):
//!
//! * **relative** rules (and the built-in default rule): a function *fails*
//!   when its growth breaches the limit (the point estimate exceeds the
//!   allowed points of share and/or percent of its own value) **and** the
//!   pooled count test is significant after Benjamini–Hochberg adjustment
//!   over the functions the rule tests (q < `alpha`). It is *improved* when
//!   it shrinks by more than the limit, significantly; *inconclusive* when it
//!   breaches the limit with `alpha <= q < inconclusive_alpha`.
//! * **absolute** rules: *fail* when the candidate's value is above the
//!   ceiling and a one-sided (quasi-)Poisson test of "value <= ceiling" rejects
//!   at `alpha`; *inconclusive* when above but not significantly.
//! * **stack** rules: the share of samples where a frame matching `caller`
//!   has a frame matching `callee` below it; with the default ceiling 0 any
//!   such sample fails.
//!
//! Overall: `fail` if any `severity = "fail"` finding fails; else
//! `inconclusive` if any such finding is inconclusive; else `improved` if
//! any finding improved; else `pass`. `warn` findings never change it.

use std::collections::HashMap;

use regex::Regex;
use serde::Serialize;

use crate::budgets::{
    default_cum_rule, default_rule, BudgetRule, Budgets, MetricKind, RuleKind, Settings, Severity,
    DEFAULT_CUM_RULE,
};
use crate::compare::{
    test_entity, CompareError, CompareOptions, Comparison, FunctionDelta, Metric, StackDelta,
};
use crate::normalize::{FuncId, FxMap, Normalizer, RunData, Scale};
use crate::profile::Profile;
use crate::stats;

/// A verdict, for one finding or the whole gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Within budget (or not significantly outside it).
    Pass,
    /// Significantly better than the limit allows for a change.
    Improved,
    /// Looks like a breach, but the data cannot decide.
    Inconclusive,
    /// A significant breach.
    Fail,
}

impl Verdict {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Improved => "improved",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Fail => "fail",
        }
    }

    /// The process exit code `profdiff gate` uses for this overall verdict.
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Pass | Verdict::Improved => 0,
            Verdict::Fail => 1,
            Verdict::Inconclusive => 3,
        }
    }
}

/// One rule's result for one entity (only non-passing or allowed ones are kept).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// Rule name.
    pub rule: String,
    /// `relative`, `absolute` or `stack`.
    pub kind: &'static str,
    /// Function (or pattern description) the finding is about.
    pub function: String,
    /// Sample type (`kind/unit`).
    pub sample_type: String,
    /// Flat or cum, when the rule looks at one.
    pub metric: Option<MetricKind>,
    /// Display unit of baseline/candidate/delta (`%` values are fractions).
    pub unit: String,
    /// Baseline value.
    pub baseline: f64,
    /// Candidate value.
    pub candidate: f64,
    /// `candidate - baseline`.
    pub delta: f64,
    /// Relative change.
    pub relative: Option<f64>,
    /// The limit that was applied, as text.
    pub limit: String,
    /// p-value of the decision test.
    pub p_value: Option<f64>,
    /// BH-adjusted p-value (relative rules).
    pub q_value: Option<f64>,
    /// Mann–Whitney p-value on per-run values (>= 2 runs per side).
    pub mwu_p_value: Option<f64>,
    /// Hodges–Lehmann confidence interval of the per-run shift.
    pub ci: Option<[f64; 2]>,
    /// Achieved confidence level of `ci`.
    pub ci_level: Option<f64>,
    /// Rule severity.
    pub severity: Severity,
    /// Verdict.
    pub verdict: Verdict,
    /// For inconclusive findings: samples (or exposure units) per side that
    /// would make the observed change decidable with 80% power.
    pub samples_needed: Option<f64>,
    /// The same as runs per side, at the current run length.
    pub runs_needed: Option<u64>,
    /// Set when an allow-list entry exempted this finding; the reason.
    pub allowed: Option<String>,
    /// Human-readable explanation.
    pub message: String,
}

/// Summary of one rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleResult {
    /// Rule name.
    pub name: String,
    /// What it checks.
    pub description: String,
    /// Severity.
    pub severity: Severity,
    /// Sample type it ran on.
    pub sample_type: Option<String>,
    /// Worst finding verdict (pass when none).
    pub verdict: Verdict,
    /// False when the rule could not run (e.g. sample type absent); see `note`.
    pub applicable: bool,
    /// Why it was not applicable.
    pub note: Option<String>,
    /// Entities tested.
    pub tested: usize,
    /// Line in the budgets file (0 for the built-in rule).
    pub line: usize,
}

/// Everything a gate run produced.
#[derive(Debug, Clone, Serialize)]
pub struct GateReport {
    /// Overall verdict.
    pub verdict: Verdict,
    /// Primary sample type.
    pub sample_type: String,
    /// Normalization applied.
    pub normalization: Vec<String>,
    /// Settings in force.
    pub alpha: f64,
    /// FDR level for inconclusive.
    pub inconclusive_alpha: f64,
    /// Noise floor (fraction).
    pub noise_floor: f64,
    /// Baseline inputs.
    pub baseline: Vec<String>,
    /// Candidate inputs.
    pub candidate: Vec<String>,
    /// Per-rule results.
    pub rules: Vec<RuleResult>,
    /// Non-passing (and allowed) findings, worst first.
    pub findings: Vec<Finding>,
    /// Largest per-function changes on the primary sample type (share scale).
    pub top: Vec<FunctionDelta>,
    /// Largest per-stack changes (folded, root first; share scale).
    pub stacks: Vec<crate::compare::StackDelta>,
    /// The scale values were compared on (`share`, `rate`, `per reconciles`,
    /// or the robust compositional scale), as shown in every report.
    pub scale: String,
    /// Introducing frames and new call edges that explain the significant
    /// inclusive growth, most important first (empty when nothing grew).
    pub culprits: Vec<Culprit>,
    /// The compositional size factor of the primary comparison (whether or
    /// not it was used: see `scale`).
    pub size_factor: crate::compare::SizeFactor,
}

/// What a [`Culprit`] points at.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CulpritKind {
    /// A function whose inclusive (cumulative) value grew, and the deepest
    /// frame that still explains most of the growth below it.
    Frame,
    /// A caller → callee edge absent (or negligible) in the baseline.
    NewEdge {
        /// The calling function.
        caller: String,
        /// The called function.
        callee: String,
    },
}

/// One frame on the path from the root to a culprit, with its inclusive
/// values on the report's scale.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathStep {
    /// Normalized function name.
    pub function: String,
    /// Baseline inclusive value.
    pub baseline: f64,
    /// Candidate inclusive value.
    pub candidate: f64,
    /// `candidate - baseline`.
    pub delta: f64,
}

/// The function (or new edge) that introduced a regression, with the path
/// that leads to it and the callees its growth went to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Culprit {
    /// Frame or new edge.
    #[serde(flatten)]
    pub kind: CulpritKind,
    /// The introducing function (the callee for a new edge).
    pub function: String,
    /// Sample type (`kind/unit`).
    pub sample_type: String,
    /// Display unit of the values (`%` values are fractions).
    pub unit: String,
    /// Baseline inclusive value.
    pub baseline: f64,
    /// Candidate inclusive value.
    pub candidate: f64,
    /// `candidate - baseline`.
    pub delta: f64,
    /// BH-adjusted p-value of the inclusive change.
    pub q_value: Option<f64>,
    /// Verdict of the rule that judged it.
    pub verdict: Verdict,
    /// True when `baseline`, `candidate`, `delta` and `explained_by` count
    /// only the stacks through none of the culprits listed before it: most
    /// of this frame's growth was theirs (a caller named for a small new
    /// call of its own after its main growth went to an earlier culprit).
    /// `path` keeps every frame's whole inclusive values.
    pub outside_earlier: bool,
    /// Root → culprit, each frame's inclusive values (the culprit last).
    pub path: Vec<PathStep>,
    /// Largest callees of the culprit by growth ("of which fmt.Sprintf +47 pt").
    pub explained_by: Vec<PathStep>,
    /// One-line human explanation.
    pub message: String,
    /// Set when an allow-list entry exempts the culprit's function; the reason.
    pub allowed: Option<String>,
    /// Per function id: the flat and cum growth of the stacks through the
    /// culprit (what it explains), for ordering and verdicts.
    #[serde(skip)]
    pub(crate) explains: Option<std::sync::Arc<[Vec<f64>; 2]>>,
}

impl Culprit {
    /// True for a new edge listed right after the frame culprit found with
    /// it (`prev`), whose path it repeats; false for a new edge listed on
    /// its own (its caller did not grow: see [`attribute`]).
    pub(crate) fn follows_its_frame(&self, prev: &Culprit) -> bool {
        matches!(self.kind, CulpritKind::NewEdge { .. })
            && prev.kind == CulpritKind::Frame
            && match (&self.explains, &prev.explains) {
                (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b),
                _ => false,
            }
    }
}

/// What [`Gate::analyse`] found in one comparison.
struct Analysis {
    funcs: Vec<FunctionDelta>,
    scale: Scale,
    culprits: Vec<Culprit>,
    residual: Vec<f64>,
    stages: Stages,
    /// The top stack changes on `scale`, when asked for and computed
    /// alongside the attribution (on the comparison as it is returned).
    stacks: Option<Result<Vec<StackDelta>, CompareError>>,
}

/// A comparison, its per-function statistics and the scale they are on.
type Compared = (Comparison, Vec<FunctionDelta>, Scale);

/// Cached comparison per requested sample type (error text when it failed).
type CompareCache = HashMap<Option<String>, Result<Compared, String>>;

/// Inputs and settings of a gate run.
pub struct Gate<'a> {
    base: Vec<(String, &'a Profile)>,
    cand: Vec<(String, &'a Profile)>,
    norm: &'a Normalizer,
    sample_type: Option<String>,
    cache: CompareCache,
    primary_key: Option<Option<String>>,
    /// A primary comparison built beforehand ([`Gate::with_comparison`]),
    /// with the sources of both sides.
    preset: Option<(Comparison, Vec<String>, Vec<String>)>,
    /// Confidence level of reported intervals.
    pub confidence: f64,
    /// Percent growth allowed by the default rule.
    pub default_max_percent: f64,
    /// How many functions to keep in [`GateReport::top`].
    pub top_n: usize,
    /// Scale of relative rules and the top table: [`Scale::Compositional`]
    /// (default) or [`Scale::Share`]. A compositional scale that cannot be
    /// estimated for a sample type falls back to share for it.
    pub scale: Scale,
}

impl<'a> Gate<'a> {
    /// A gate over these profiles; `sample_type` None picks each profile's default.
    pub fn new(
        base: Vec<(String, &'a Profile)>,
        cand: Vec<(String, &'a Profile)>,
        norm: &'a Normalizer,
        sample_type: Option<String>,
    ) -> Gate<'a> {
        Gate {
            base,
            cand,
            norm,
            sample_type,
            cache: HashMap::new(),
            primary_key: None,
            preset: None,
            confidence: 0.95,
            default_max_percent: 5.0,
            top_n: 20,
            scale: Scale::Compositional,
        }
    }

    /// A gate over a primary comparison built beforehand (e.g. by
    /// [`Comparison::from_pprof_files`] for `sample_type`), its runs named
    /// `base` and `cand`. It holds no profiles: only rules on the primary
    /// sample type apply (a rule naming another sample type, or budgets
    /// settings naming one, are reported as not applicable, and quantile
    /// rules find no latency profiles), so use it when the budgets have
    /// none; [`Gate::new`] handles every rule.
    pub fn with_comparison(
        comparison: Comparison,
        base: Vec<String>,
        cand: Vec<String>,
        norm: &'a Normalizer,
        sample_type: Option<String>,
    ) -> Gate<'a> {
        let mut g = Gate::new(Vec::new(), Vec::new(), norm, sample_type);
        g.preset = Some((comparison, base, cand));
        g
    }

    fn comparison(&mut self, st: Option<&str>, settings: &Settings) -> Result<&Compared, String> {
        let key = st.map(str::to_string).or_else(|| self.sample_type.clone());
        if !self.cache.contains_key(&key) {
            let r = Comparison::new(&self.base, &self.cand, key.as_deref(), self.norm)
                .and_then(|mut c| {
                    let a = self.analyse(&mut c, settings, &[], None)?;
                    Ok((c, a.funcs, a.scale))
                })
                .map_err(|e: CompareError| e.to_string());
            self.cache.insert(key.clone(), r);
        }
        self.cache[&key].as_ref().map_err(|e| e.clone())
    }

    /// Per-function statistics on the gate's scale, and the culprits.
    ///
    /// Compositional scale, two passes: the first on the median-of-ratios
    /// size factor finds the culprits of significant growth; the second
    /// uses the size factor of everything outside their subtrees (the
    /// stacks through no failing culprit), so that what did not change
    /// compares equal. With only inconclusive culprits, their reference
    /// is used when it holds at least half of the baseline and differs
    /// from the median of ratios by more than
    /// [`MISLED_SCALE`]: the median can be far off when the regression
    /// moved much of the profile between functions seen on one side only
    /// (a sort replaced by a quadratic loop: factor 1.55 where the
    /// reference gives 0.73), which makes the culprit look small.
    /// Otherwise the first pass stands.
    fn analyse(
        &self,
        cmp: &mut Comparison,
        settings: &Settings,
        allow: &[crate::budgets::Allow],
        top_stacks: Option<usize>,
    ) -> Result<Analysis, CompareError> {
        let opts = |scale: &Scale| CompareOptions {
            scale: scale.clone(),
            noise_floor: settings.noise_floor,
            confidence: self.confidence,
        };
        let scale = match self.scale {
            Scale::Compositional if !cmp.size.fallback => Scale::Compositional,
            _ => Scale::Share,
        };
        // The stacks' edges, indexed when the first pass needs them (both
        // passes read the same stacks).
        let index = std::cell::OnceCell::new();
        let pass = |cmp: &Comparison,
                    scale: &Scale,
                    prefill: &dyn Fn(&[FunctionDelta])|
         -> Result<Analysis, CompareError> {
            let funcs = cmp.functions(&opts(scale))?;
            prefill(&funcs);
            let (mut culprits, residual, stages) = attribute(
                cmp,
                &index,
                &funcs,
                scale,
                "%",
                settings,
                self.default_max_percent,
            );
            let cum_rule = default_cum_rule(self.default_max_percent);
            for c in &mut culprits {
                c.allowed = allowed(&cum_rule, &c.function, allow);
            }
            // Allow-listed culprits (e.g. expected GC work) go after the others.
            culprits.sort_by_key(|c| c.allowed.is_some());
            Ok(Analysis {
                funcs,
                scale: scale.clone(),
                culprits,
                residual,
                stages,
                stacks: None,
            })
        };
        // A large comparison builds its edge index on a third thread while
        // the first pass computes the per-function statistics (the two
        // overlap on two cores); the index is given up if nothing grew.
        let speculate = cmp.distinct_stacks() >= SPECULATIVE_INDEX;
        let stop = std::sync::atomic::AtomicBool::new(false);
        // The baseline's side, when the loading indexed it already.
        let base_edges = cmp.base_edges.take();
        let mut first = std::thread::scope(|sc| {
            let cmp: &Comparison = cmp;
            let pending = std::cell::Cell::new(
                speculate.then(|| sc.spawn(|| EdgeIndex::build(cmp, base_edges, &stop))),
            );
            // The top stack changes on this pass's scale, computed while
            // the attribution's rounds (mostly on one thread) run; kept
            // unless a second pass changes the size factor.
            let top = std::cell::Cell::new(None);
            let prefill = |funcs: &[FunctionDelta]| {
                if let Some(h) = pending.take() {
                    let grown = grown_functions(funcs, settings, self.default_max_percent, None);
                    if !needs_edge_index(&grown) {
                        stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    let built = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
                    if !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let _ = index.set(built);
                    }
                }
                if let (true, Some(limit)) = (speculate, top_stacks) {
                    let scale = &scale;
                    top.set(Some(sc.spawn(move || cmp.stacks(scale, limit))));
                }
            };
            let first = pass(cmp, &scale, &prefill);
            if let Some(h) = pending.take() {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                let _ = h.join();
            }
            let top = top
                .take()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
            first.map(|mut a| {
                a.stacks = top;
                a
            })
        })?;
        if scale != Scale::Compositional {
            return Ok(first);
        }
        let culprits = |v: Verdict| -> Vec<&str> {
            first
                .culprits
                .iter()
                .filter(|c| c.kind == CulpritKind::Frame && c.verdict == v)
                .map(|c| c.function.as_str())
                .collect()
        };
        let reference = |names: &[&str]| {
            let exclude: Vec<bool> = cmp
                .table
                .funcs
                .iter()
                .map(|f| names.contains(&f.name.as_str()))
                .collect();
            crate::compare::SizeFactor::from_reference(cmp, &exclude)
        };
        let failing = culprits(Verdict::Fail);
        let sf = if !failing.is_empty() {
            reference(&failing)
        } else {
            // Only inconclusive culprits: their reference replaces the
            // median of ratios when it holds most of the baseline and the
            // two disagree by more than sampling allows (the median was
            // misled; in A/A comparisons they agree and the first pass
            // stands).
            let unsure = culprits(Verdict::Inconclusive);
            let first_factor = cmp.size.factor;
            (!unsure.is_empty())
                .then(|| reference(&unsure))
                .flatten()
                .filter(|sf| {
                    sf.baseline_fraction >= 0.5
                        && (sf.factor / first_factor).ln().abs() > MISLED_SCALE.ln()
                })
        };
        match sf {
            Some(sf) => {
                first.stacks = None;
                cmp.set_size_factor(sf);
                pass(cmp, &scale, &|_| {})
            }
            None => Ok(first),
        }
    }

    /// A `kind = "quantile"` rule: the pooled latency histograms of each
    /// side (see [`crate::quantile`]), per matching function.
    fn eval_quantile(
        &self,
        rule: &BudgetRule,
        allow: &[crate::budgets::Allow],
    ) -> (RuleResult, Vec<Finding>) {
        use crate::quantile::{fmt_ns, histograms, quantile, quantile_name};
        let RuleKind::Quantile {
            function,
            q,
            max,
            max_percent,
            min_calls,
        } = &rule.kind
        else {
            unreachable!("eval_quantile on another rule kind");
        };
        let mut result = RuleResult {
            name: rule.name.clone(),
            description: rule.describe(),
            severity: rule.severity,
            sample_type: Some("latency/nanoseconds".into()),
            verdict: Verdict::Pass,
            applicable: true,
            note: None,
            tested: 0,
            line: rule.line,
        };
        let side = |v: &[(String, &Profile)]| {
            let ps: Vec<&Profile> = v.iter().map(|(_, p)| *p).collect();
            histograms(&ps, self.norm, function)
        };
        let (base, cand) = (side(&self.base), side(&self.cand));
        if cand.is_empty() && base.is_empty() {
            result.applicable = false;
            result.note = Some(format!(
                "no latency samples (label latency_bucket_ns) of /{}/ in the inputs",
                function.as_str()
            ));
            return (result, Vec::new());
        }
        let qn = quantile_name(*q);
        let mut out = Vec::new();
        let names: std::collections::BTreeSet<&String> = base.keys().chain(cand.keys()).collect();
        for name in names {
            result.tested += 1;
            let empty = crate::quantile::Histogram::new();
            let b = base.get(name).unwrap_or(&empty);
            let c = cand.get(name).unwrap_or(&empty);
            let (nb, nc): (u64, u64) = (b.values().sum(), c.values().sum());
            let (qb, qc) = (quantile(b, *q), quantile(c, *q));
            let over_max = matches!((qc, max), (Some(v), Some(m)) if v > *m);
            let growth = match (qb, qc) {
                (Some(b), Some(c)) if b > 0.0 => Some(c / b - 1.0),
                _ => None,
            };
            let grew = matches!((growth, max_percent), (Some(g), Some(p)) if g * 100.0 > *p);
            let shrank = matches!((growth, max_percent), (Some(g), Some(p)) if -g * 100.0 > *p);
            let few = nc < *min_calls || (max_percent.is_some() && nb < *min_calls);
            let verdict = if (over_max || grew) && few {
                Verdict::Inconclusive
            } else if over_max || grew {
                Verdict::Fail
            } else if shrank && !few {
                Verdict::Improved
            } else if qc.is_none() && max_percent.is_some() && nb > 0 {
                // Measured in the baseline, absent from the candidate.
                Verdict::Inconclusive
            } else {
                Verdict::Pass
            };
            if verdict == Verdict::Pass {
                continue;
            }
            let (vb, vc) = (qb.unwrap_or(0.0), qc.unwrap_or(0.0));
            let mut why = Vec::new();
            if over_max {
                why.push(format!("above the ceiling {}", fmt_ns(max.unwrap_or(0.0))));
            }
            if grew || shrank {
                why.push(format!(
                    "{:+.1}% (limit {}%)",
                    growth.unwrap_or(0.0) * 100.0,
                    max_percent.unwrap_or(0.0)
                ));
            }
            if few {
                why.push(format!("fewer than {min_calls} calls on a side"));
            }
            if qc.is_none() {
                why.push("no calls in the candidate".into());
            }
            out.push(Finding {
                rule: rule.name.clone(),
                kind: "quantile",
                function: name.clone(),
                sample_type: "latency/nanoseconds".into(),
                metric: None,
                unit: "ns".into(),
                baseline: vb,
                candidate: vc,
                delta: vc - vb,
                relative: growth,
                limit: rule.describe(),
                p_value: None,
                q_value: None,
                mwu_p_value: None,
                ci: None,
                ci_level: None,
                severity: rule.severity,
                verdict,
                samples_needed: None,
                runs_needed: None,
                allowed: allowed(rule, name, allow),
                message: format!(
                    "{qn} {} -> {} ({}); calls {nb} -> {nc}",
                    if qb.is_some() { fmt_ns(vb) } else { "-".into() },
                    if qc.is_some() { fmt_ns(vc) } else { "-".into() },
                    why.join(", ")
                ),
            });
        }
        result.verdict = out
            .iter()
            .filter(|f| f.allowed.is_none())
            .map(|f| f.verdict)
            .max()
            .unwrap_or(Verdict::Pass);
        (result, out)
    }

    /// The primary comparison and its per-function statistics (on
    /// [`Gate::primary_scale`]), available after [`Gate::run`].
    pub fn primary(&self) -> Option<(&Comparison, &[FunctionDelta])> {
        let key = self.primary_key.as_ref()?;
        match self.cache.get(key)? {
            Ok((c, f, _)) => Some((c, f.as_slice())),
            Err(_) => None,
        }
    }

    /// The scale of the primary comparison's statistics (after [`Gate::run`]).
    pub fn primary_scale(&self) -> Option<&Scale> {
        let key = self.primary_key.as_ref()?;
        match self.cache.get(key)? {
            Ok((_, _, s)) => Some(s),
            Err(_) => None,
        }
    }

    /// Run every rule. An error is returned only when the primary sample type
    /// cannot be compared at all; a rule whose sample type is absent is
    /// reported as not applicable.
    pub fn run(&mut self, budgets: &Budgets) -> Result<GateReport, CompareError> {
        let settings = budgets.settings.clone();
        // Primary comparison: surface its error directly.
        let key = settings
            .sample_type
            .clone()
            .or_else(|| self.sample_type.clone());
        let (mut primary, sources) = match self.preset.take() {
            Some((c, b, k)) => (c, Some((b, k))),
            None => (
                Comparison::new(&self.base, &self.cand, key.as_deref(), self.norm)?,
                None,
            ),
        };
        let (baseline, candidate) = sources.unwrap_or_else(|| {
            (
                self.base.iter().map(|b| b.0.clone()).collect(),
                self.cand.iter().map(|b| b.0.clone()).collect(),
            )
        });
        let Analysis {
            funcs: primary_top,
            scale: pscale,
            culprits,
            residual,
            stages,
            stacks,
        } = self.analyse(&mut primary, &settings, &budgets.allow, Some(self.top_n))?;
        let sample_type = primary.sample_type.to_string();
        let stacks = match stacks {
            Some(s) => s?,
            None => primary.stacks(&pscale, self.top_n)?,
        };
        let normalization = primary.normalization.clone();
        let size_factor = primary.size.clone();
        let scale_text = match self.scale {
            Scale::Compositional => size_factor.describe(),
            _ => "share".to_string(),
        };
        let cum_rule = default_cum_rule(self.default_max_percent);
        self.cache
            .insert(key.clone(), Ok((primary, primary_top, pscale)));
        self.primary_key = Some(key.clone());

        let mut rules: Vec<BudgetRule> = Vec::new();
        if settings.default_rule {
            rules.push(default_rule(self.default_max_percent));
            rules.push(default_cum_rule(self.default_max_percent));
        }
        rules.extend(budgets.rules.iter().cloned());

        let mut results = Vec::new();
        let mut findings = Vec::new();
        for rule in &rules {
            if matches!(rule.kind, RuleKind::Quantile { .. }) {
                let (res, mut f) = self.eval_quantile(rule, &budgets.allow);
                results.push(res);
                findings.append(&mut f);
                continue;
            }
            let st = rule.sample_type.clone().or_else(|| key.clone());
            let (res, mut f) = match self.comparison(st.as_deref(), &settings) {
                Ok((cmp, funcs, sc)) => eval_rule(rule, cmp, funcs, sc, &settings, &budgets.allow),
                Err(e) => (
                    RuleResult {
                        name: rule.name.clone(),
                        description: rule.describe(),
                        severity: rule.severity,
                        sample_type: st.clone(),
                        verdict: Verdict::Pass,
                        applicable: false,
                        note: Some(e),
                        tested: 0,
                        line: rule.line,
                    },
                    Vec::new(),
                ),
            };
            results.push(res);
            findings.append(&mut f);
        }
        // The primary statistics of the functions the findings and the
        // culprits name, by name (the last record of a name): one pass over
        // every function into a map of the few that are looked up.
        let named: FxMap<&str, &FunctionDelta> = match self.primary() {
            Some((_, funcs)) => {
                let wanted: FxMap<&str, ()> = findings
                    .iter()
                    .map(|f| f.function.as_str())
                    .chain(culprits.iter().map(|c| c.function.as_str()))
                    .map(|n| (n, ()))
                    .collect();
                funcs
                    .iter()
                    .filter(|d| wanted.contains_key(d.function.as_str()))
                    .map(|d| (d.function.as_str(), d))
                    .collect()
            }
            None => FxMap::default(),
        };
        // The built-in rules' findings that the first culprits do not
        // explain are adjusted again among the changes they do not explain
        // (see `Stages`).
        if settings.default_rule && stages.rounds > 0 {
            if let (Some((_, funcs)), Some(scale)) = (self.primary(), self.primary_scale()) {
                retest_by_stage(&mut findings, funcs, &named, &stages, &settings, scale);
            }
        }
        // The built-in cumulative rule: a function whose growth is mostly
        // explained by a culprit (its ancestors carrying it, the library
        // frames below it) is not a finding of its own; the culprit is.
        let culprit_rank = |name: &str| {
            culprits
                .iter()
                .position(|c| c.kind == CulpritKind::Frame && c.function == name)
        };
        if self.primary().is_some() {
            findings.retain(|f| {
                if f.rule != DEFAULT_CUM_RULE || culprit_rank(&f.function).is_some() {
                    return true;
                }
                match named.get(f.function.as_str()) {
                    Some(d) if d.cum.delta > 0.0 => residual[d.id as usize] > EXPLAIN * d.cum.delta,
                    _ => true,
                }
            });
        }
        // Every culprit of the built-in rule is a finding (a culprit found
        // by composition need not breach the limit itself: it carries the
        // growth it explains).
        if settings.default_rule {
            if let Some((cmp, funcs)) = self.primary() {
                for c in culprits.iter().filter(|c| c.kind == CulpritKind::Frame) {
                    if findings.iter().any(|f| {
                        (f.rule == DEFAULT_CUM_RULE || f.rule == DEFAULT_FLAT_RULE)
                            && f.function == c.function
                    }) {
                        continue;
                    }
                    if let Some(d) = funcs
                        .iter()
                        .find(|d| d.function == c.function && d.cum.delta > 0.0)
                    {
                        let mut f = base_finding(&cum_rule, "relative", cmp, &d.cum, "%".into());
                        f.function = c.function.clone();
                        f.metric = Some(MetricKind::Cum);
                        f.verdict = c.verdict;
                        f.q_value = c.q_value;
                        f.allowed = c.allowed.clone();
                        findings.push(f);
                    }
                }
            }
        }
        for f in &mut findings {
            if f.rule == DEFAULT_CUM_RULE {
                if let Some(c) = culprit_rank(&f.function).map(|i| &culprits[i]) {
                    f.message = format!("culprit: {}; q={}", c.message, fmt_p(f.q_value));
                }
            }
        }
        // A culprit carries the verdict of the default-rule findings it
        // explains (the leaves below it whose growth runs through it), and
        // its own finding comes first: culprits, then leaves.
        let mut culprits = culprits;
        if self.primary().is_some() {
            for f in &findings {
                let default = f.rule == DEFAULT_CUM_RULE || f.rule == DEFAULT_FLAT_RULE;
                if !default || f.allowed.is_some() || f.verdict < Verdict::Inconclusive {
                    continue;
                }
                let Some(d) = named.get(f.function.as_str()) else {
                    continue;
                };
                let (k, full) = match f.metric {
                    Some(MetricKind::Flat) => (0, d.flat.delta),
                    _ => (1, d.cum.delta),
                };
                for c in culprits.iter_mut() {
                    let part = c.explains.as_ref().map_or(0.0, |e| e[k][d.id as usize]);
                    if full > 0.0 && part >= EXPLAIN * full && f.verdict > c.verdict {
                        c.verdict = f.verdict;
                    }
                }
            }
            // The new-edge entry shares its frame's verdict.
            for i in 1..culprits.len() {
                if culprits[i].follows_its_frame(&culprits[i - 1]) {
                    culprits[i].verdict = culprits[i].verdict.max(culprits[i - 1].verdict);
                }
            }
        }
        let culprit_rank = |name: &str| {
            culprits.iter().position(|c| {
                c.kind == CulpritKind::Frame && c.function == name && c.allowed.is_none()
            })
        };
        for f in &mut findings {
            if f.rule == DEFAULT_CUM_RULE && f.allowed.is_none() && f.delta > 0.0 {
                if let Some(c) = culprit_rank(&f.function).map(|i| &culprits[i]) {
                    f.verdict = f.verdict.max(c.verdict);
                }
            }
        }
        findings.sort_by(|a, b| {
            let rank = |f: &Finding| {
                ((f.rule == DEFAULT_CUM_RULE || f.rule == DEFAULT_FLAT_RULE) && f.delta > 0.0)
                    .then(|| culprit_rank(&f.function))
                    .flatten()
                    .unwrap_or(usize::MAX)
            };
            rank(a)
                .cmp(&rank(b))
                .then((b.rule == DEFAULT_CUM_RULE).cmp(&(a.rule == DEFAULT_CUM_RULE)))
                .then(b.verdict.cmp(&a.verdict))
                .then((a.severity as u8).cmp(&(b.severity as u8)))
                .then(b.delta.abs().total_cmp(&a.delta.abs()))
                .then(a.function.cmp(&b.function))
        });
        for r in results
            .iter_mut()
            .filter(|r| r.name == DEFAULT_CUM_RULE || r.name == DEFAULT_FLAT_RULE)
        {
            r.verdict = findings
                .iter()
                .filter(|f| f.rule == r.name && f.allowed.is_none())
                .map(|f| f.verdict)
                .max()
                .unwrap_or(Verdict::Pass);
        }
        let counted = |v: Verdict| {
            findings
                .iter()
                .any(|f| f.verdict == v && f.severity == Severity::Fail && f.allowed.is_none())
        };
        let verdict = if counted(Verdict::Fail) {
            Verdict::Fail
        } else if counted(Verdict::Inconclusive) {
            Verdict::Inconclusive
        } else if findings
            .iter()
            .any(|f| f.verdict == Verdict::Improved && f.allowed.is_none())
        {
            Verdict::Improved
        } else {
            Verdict::Pass
        };
        // The first `top_n` of the primary statistics (a copy of those
        // only: the whole list stays in the cache).
        let top: Vec<FunctionDelta> = match self.primary() {
            Some((_, funcs)) => funcs[..funcs.len().min(self.top_n)].to_vec(),
            None => Vec::new(),
        };
        Ok(GateReport {
            verdict,
            sample_type,
            normalization,
            alpha: settings.alpha,
            inconclusive_alpha: settings.inconclusive_alpha,
            noise_floor: settings.noise_floor,
            baseline,
            candidate,
            rules: results,
            findings,
            top,
            stacks,
            scale: scale_text,
            culprits,
            size_factor,
        })
    }
}

/// `re.is_match(name)`, without running the regex for the built-in rules'
/// pattern `.` (any character but a newline), which every rule tests
/// against every function.
fn matches_function(re: &Regex, name: &str) -> bool {
    if re.as_str() == "." {
        // A UTF-8 byte other than `\n` belongs to a character other than it.
        name.bytes().any(|b| b != b'\n')
    } else {
        re.is_match(name)
    }
}

fn allowed(rule: &BudgetRule, name: &str, allow: &[crate::budgets::Allow]) -> Option<String> {
    if rule.allow.iter().any(|r| r.is_match(name)) {
        return Some(format!("allowed by rule {}", rule.name));
    }
    allow
        .iter()
        .find(|a| a.rule.as_deref().is_none_or(|r| r == rule.name) && a.function.is_match(name))
        .map(|a| {
            if a.reason.is_empty() {
                format!("allowed by /{}/", a.function.as_str())
            } else {
                a.reason.clone()
            }
        })
}

fn func_flags(cmp: &Comparison, re: &Regex) -> Vec<bool> {
    cmp.table
        .funcs
        .iter()
        .map(|f| re.is_match(&f.name))
        .collect()
}

/// Per-run value of the functions flagged: flat = leaf flagged; cum = any frame flagged.
fn sum_matching(run: &RunData, flags: &[bool], metric: MetricKind) -> f64 {
    run.stacks
        .iter()
        .filter(|(s, _)| match metric {
            MetricKind::Flat => s.last().is_some_and(|&f| flags[f as usize]),
            MetricKind::Cum => s.iter().any(|&f| flags[f as usize]),
        })
        .map(|(_, v)| v)
        .sum()
}

/// Per-run value of stacks where a caller-flagged frame has a callee-flagged frame below it.
fn sum_caller_callee(run: &RunData, caller: &[bool], callee: &[bool]) -> f64 {
    run.stacks
        .iter()
        .filter(|(s, _)| match s.iter().position(|&f| caller[f as usize]) {
            Some(i) => s[i + 1..].iter().any(|&f| callee[f as usize]),
            None => false,
        })
        .map(|(_, v)| v)
        .sum()
}

fn breach(delta: f64, rel: Option<f64>, max_points: Option<f64>, max_percent: Option<f64>) -> bool {
    if delta <= 0.0 {
        return false;
    }
    let over_points = max_points.map(|p| delta * 100.0 > p);
    let over_percent = max_percent.map(|p| rel.is_none_or(|r| r * 100.0 > p));
    match (over_points, over_percent) {
        (Some(a), Some(b)) => a && b,
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => true,
    }
}

fn base_finding(
    rule: &BudgetRule,
    kind: &'static str,
    cmp: &Comparison,
    m: &Metric,
    unit: String,
) -> Finding {
    Finding {
        rule: rule.name.clone(),
        kind,
        function: String::new(),
        sample_type: cmp.sample_type.to_string(),
        metric: None,
        unit,
        baseline: m.baseline,
        candidate: m.candidate,
        delta: m.delta,
        relative: m.relative,
        limit: rule.describe(),
        p_value: m.p_value,
        q_value: m.q_value,
        mwu_p_value: m.mwu_p,
        ci: m.shift.map(|s| [s.low, s.high]),
        ci_level: m.shift.map(|s| s.level),
        severity: rule.severity,
        verdict: Verdict::Pass,
        samples_needed: None,
        runs_needed: None,
        allowed: None,
        message: String::new(),
    }
}

fn fmt_p(p: Option<f64>) -> String {
    match p {
        Some(p) if p < 1e-4 => format!("{p:.1e}"),
        Some(p) => format!("{p:.4}"),
        None => "-".into(),
    }
}

fn eval_rule(
    rule: &BudgetRule,
    cmp: &Comparison,
    funcs: &[FunctionDelta],
    scale: &Scale,
    s: &Settings,
    allow: &[crate::budgets::Allow],
) -> (RuleResult, Vec<Finding>) {
    let mut result = RuleResult {
        name: rule.name.clone(),
        description: rule.describe(),
        severity: rule.severity,
        sample_type: Some(cmp.sample_type.to_string()),
        verdict: Verdict::Pass,
        applicable: true,
        note: None,
        tested: 0,
        line: rule.line,
    };
    let mut out = Vec::new();
    match &rule.kind {
        RuleKind::Relative {
            function,
            metric,
            max_points,
            max_percent,
            aggregate,
        } if !aggregate => {
            let pick = |d: &FunctionDelta| -> Metric {
                match metric {
                    MetricKind::Flat => d.flat.clone(),
                    MetricKind::Cum => d.cum.clone(),
                }
            };
            let mut cands: Vec<(&FunctionDelta, Metric)> = funcs
                .iter()
                .filter(|d| matches_function(function, &d.function))
                .map(|d| (d, pick(d)))
                .filter(|(_, m)| m.p_value.is_some())
                .collect();
            let ps: Vec<f64> = cands
                .iter()
                .map(|(_, m)| m.p_value.unwrap_or(1.0))
                .collect();
            let qs = stats::benjamini_hochberg(&ps);
            result.tested = cands.len();
            for ((d, m), q) in cands.iter_mut().zip(qs) {
                m.q_value = Some(q);
                let up = breach(m.delta, m.relative, *max_points, *max_percent);
                let down = breach(-m.delta, m.relative.map(|r| -r), *max_points, *max_percent);
                let verdict = if up && q < s.alpha {
                    Verdict::Fail
                } else if down && q < s.alpha {
                    Verdict::Improved
                } else if up && q < s.inconclusive_alpha {
                    Verdict::Inconclusive
                } else {
                    Verdict::Pass
                };
                if verdict == Verdict::Pass {
                    continue;
                }
                let mut f = base_finding(rule, "relative", cmp, m, "%".into());
                f.function = d.function.clone();
                f.metric = Some(*metric);
                f.q_value = Some(q);
                f.verdict = verdict;
                f.allowed = allowed(rule, &d.function, allow);
                if verdict == Verdict::Inconclusive {
                    set_needed(&mut f, m, s.alpha, result.tested);
                }
                f.message = relative_message(*metric, scale, m, q);
                out.push(f);
            }
        }
        RuleKind::Relative {
            function,
            metric,
            max_points,
            max_percent,
            ..
        } => {
            let flags = func_flags(cmp, function);
            let m = cmp
                .observe(scale, |r| sum_matching(r, &flags, *metric))
                .map(|(b, c)| test_entity(&b, &c, scale, 0.95));
            match m {
                Ok(m) => {
                    result.tested = 1;
                    let p = m.p_value.unwrap_or(1.0);
                    let up = breach(m.delta, m.relative, *max_points, *max_percent);
                    let down = breach(-m.delta, m.relative.map(|r| -r), *max_points, *max_percent);
                    let verdict = if up && p < s.alpha {
                        Verdict::Fail
                    } else if down && p < s.alpha {
                        Verdict::Improved
                    } else if up && p < s.inconclusive_alpha {
                        Verdict::Inconclusive
                    } else {
                        Verdict::Pass
                    };
                    if verdict != Verdict::Pass {
                        let mut f = base_finding(rule, "relative", cmp, &m, "%".into());
                        f.function = format!("/{}/ (sum)", function.as_str());
                        f.metric = Some(*metric);
                        f.verdict = verdict;
                        if verdict == Verdict::Inconclusive {
                            if let Some((e, r)) = m.needed(m.delta, s.alpha) {
                                let now = m.runs.0.max(m.runs.1) as u64;
                                let r = r.max(now + 1);
                                f.samples_needed =
                                    Some(e.max(m.exposure_per_run * r as f64).ceil());
                                f.runs_needed = Some(r);
                            }
                        }
                        f.message = format!(
                            "summed {} {:.2}% -> {:.2}%, p={}",
                            scale_word(scale),
                            m.baseline * 100.0,
                            m.candidate * 100.0,
                            fmt_p(m.p_value)
                        );
                        out.push(f);
                    }
                }
                Err(e) => {
                    result.applicable = false;
                    result.note = Some(e.to_string());
                }
            }
        }
        RuleKind::Absolute {
            function,
            metric,
            scale,
            max,
        } => {
            let flags = function.as_ref().map(|re| func_flags(cmp, re));
            let obs = cmp.observe(scale, |r| match &flags {
                Some(fl) => sum_matching(r, fl, *metric),
                None => r.total,
            });
            match obs {
                Ok((b, c)) => {
                    result.tested = 1;
                    let m = test_entity(&b, &c, scale, 0.95);
                    let (p, needed) = ceiling_test(&c, *max, s.alpha);
                    let verdict = if m.candidate > *max && p < s.alpha {
                        Verdict::Fail
                    } else if m.candidate > *max {
                        Verdict::Inconclusive
                    } else if m.baseline > *max {
                        Verdict::Improved
                    } else {
                        Verdict::Pass
                    };
                    if verdict != Verdict::Pass {
                        let mut f = base_finding(rule, "absolute", cmp, &m, cmp.unit(scale));
                        f.function = match function {
                            Some(re) => format!("/{}/", re.as_str()),
                            None => "total".into(),
                        };
                        f.metric = Some(*metric);
                        f.p_value = Some(p);
                        f.q_value = None;
                        f.verdict = verdict;
                        f.allowed = allowed(rule, &f.function, allow);
                        if verdict == Verdict::Inconclusive {
                            f.runs_needed = needed;
                        }
                        f.message = format!(
                            "{} {} -> {} (ceiling {}), p(<= ceiling)={}",
                            cmp.unit(scale),
                            fmt_num(m.baseline),
                            fmt_num(m.candidate),
                            fmt_num(*max),
                            fmt_p(Some(p))
                        );
                        out.push(f);
                    }
                }
                Err(e) => {
                    result.applicable = false;
                    result.note = Some(e.to_string());
                }
            }
        }
        RuleKind::Stack {
            caller,
            callee,
            max,
        } => {
            let cf = func_flags(cmp, caller);
            let ce = func_flags(cmp, callee);
            if let Ok((b, c)) = cmp.observe(&Scale::Share, |r| sum_caller_callee(r, &cf, &ce)) {
                result.tested = 1;
                let m = test_entity(&b, &c, &Scale::Share, 0.95);
                let (p, needed) = ceiling_test(&c, *max, s.alpha);
                let verdict = if m.candidate > *max && p < s.alpha {
                    Verdict::Fail
                } else if m.candidate > *max {
                    Verdict::Inconclusive
                } else if m.baseline > *max {
                    Verdict::Improved
                } else {
                    Verdict::Pass
                };
                if verdict != Verdict::Pass {
                    let mut f = base_finding(rule, "stack", cmp, &m, "%".into());
                    f.function = format!("/{}/ under /{}/", callee.as_str(), caller.as_str());
                    f.p_value = Some(p);
                    f.q_value = None;
                    f.verdict = verdict;
                    if verdict == Verdict::Inconclusive {
                        f.runs_needed = needed;
                    }
                    let example = cmp
                        .cand
                        .iter()
                        .flat_map(|r| r.stacks.iter())
                        .filter(|(s, _)| match s.iter().position(|&f| cf[f as usize]) {
                            Some(i) => s[i + 1..].iter().any(|&f| ce[f as usize]),
                            None => false,
                        })
                        .max_by(|a, b| a.1.total_cmp(b.1).then_with(|| b.0.cmp(a.0)))
                        .map(|(s, _)| cmp.folded(s));
                    let samples: f64 = c.iter().map(|o| o.value / o.weight.max(1e-300)).sum();
                    f.message = format!(
                        "{:.0} candidate samples ({:.3}%) match, baseline {:.3}%{}",
                        samples,
                        m.candidate * 100.0,
                        m.baseline * 100.0,
                        example.map(|e| format!("; e.g. {e}")).unwrap_or_default()
                    );
                    out.push(f);
                }
            }
        }
        RuleKind::Quantile { .. } => {
            // Evaluated on the latency profiles by `Gate::eval_quantile`.
            result.applicable = false;
            result.note = Some("quantile rules read latency profiles".into());
        }
    }
    result.verdict = out
        .iter()
        .filter(|f| f.allowed.is_none())
        .map(|f| f.verdict)
        .max()
        .unwrap_or(Verdict::Pass);
    (result, out)
}

/// One-sided test of "the candidate's pooled value <= max" on counts
/// (quasi-Poisson, dispersion from the runs). Returns the p-value and, when
/// the observation is above the ceiling, the runs per side that would reach
/// `alpha` with 80% power if the observed excess is real.
fn ceiling_test(c: &[crate::compare::Obs], max: f64, alpha: f64) -> (f64, Option<u64>) {
    let w = {
        let ws: Vec<f64> = c.iter().map(|o| o.weight.max(1e-300)).collect();
        ws.iter().sum::<f64>() / ws.len().max(1) as f64
    };
    let y: f64 = c.iter().map(|o| o.value / w).sum();
    let den: f64 = c.iter().map(|o| o.denom).sum();
    let mu0 = max * den / w;
    if mu0 <= 0.0 {
        return (if y > 0.0 { 0.0 } else { 1.0 }, None);
    }
    let rate = y / den.max(1e-300);
    let phi = if c.len() >= 2 {
        let mut pearson = 0.0;
        for o in c {
            let e = rate * o.denom;
            if e > 0.0 {
                pearson += (o.value / w - e).powi(2) / e;
            }
        }
        (pearson / (c.len() - 1) as f64).max(1.0)
    } else {
        1.0
    };
    let p = stats::poisson_sf(y / phi, mu0 / phi);
    let needed = if y > mu0 {
        let z_now = (y - mu0) / (phi * mu0).sqrt();
        let z_need = stats::normal_quantile(1.0 - alpha) + stats::normal_quantile(0.8);
        let k = (z_need / z_now).powi(2);
        Some((k * c.len() as f64).ceil().max(c.len() as f64 + 1.0) as u64)
    } else {
        None
    };
    (p, needed)
}

/// Format a number compactly for messages.
pub fn fmt_num(x: f64) -> String {
    let a = x.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e6).contains(&a) {
        format!("{x:.3e}")
    } else {
        format!("{x:.4}")
    }
}

/// Ids of functions whose flat (or cum) change is significant at `alpha` under
/// BH over all tested functions: used to colour differential flame graphs.
pub fn significant_functions(funcs: &[FunctionDelta], alpha: f64, cum: bool) -> Vec<(FuncId, f64)> {
    funcs
        .iter()
        .filter_map(|d| {
            let m = if cum { &d.cum } else { &d.flat };
            match m.q_value {
                Some(q) if q < alpha => Some((d.id, m.delta)),
                _ => None,
            }
        })
        .collect()
}

// ------------------------------------------------------------ attribution

/// Share of a function's inclusive growth a callee (or an ancestor's
/// growth a culprit) must explain to be followed ("most of the growth":
/// more than this share; a callee with exactly half, which another may
/// share, is not followed).
const EXPLAIN: f64 = 0.5;
/// When the first pass has only inconclusive culprits, the reference size
/// factor (outside their subtrees, holding at least half of the
/// baseline) replaces the median of ratios when the two differ by more
/// than this factor either way.
const MISLED_SCALE: f64 = 1.25;
/// A callee new to the profile at the end of a culprit's chain is the
/// culprit in place of its caller when its growth is at least this
/// fraction of the caller's (the caller grew in no other way).
const ABSORB: f64 = 0.75;
/// A caller → callee edge is *new* when its baseline value is at most this
/// fraction of its candidate value (baseline units).
const NEW_EDGE: f64 = 0.1;
/// Smallest change of one part's fraction of a function's inclusive value
/// (self or one callee) that counts as a change of the function's own
/// composition.
const COMPOSITION_SHIFT: f64 = 0.2;
/// Most culprits reported.
const MAX_CULPRITS: usize = 5;
/// Said after the values of a culprit that count only the stacks outside
/// the culprits before it ([`Culprit::outside_earlier`]).
pub(crate) const OUTSIDE_EARLIER: &str = " outside the culprits above";

/// Pooled inclusive, self and edge values of both sides (index 0 baseline,
/// 1 candidate) in display units of one scale, over the stacks that contain
/// none of the excluded functions.
#[derive(Clone)]
struct Agg<'t> {
    cum: [Vec<f64>; 2],
    flat: [Vec<f64>; 2],
    /// Inclusive samples (counts), for the composition test.
    cum_n: [Vec<f64>; 2],
    /// Caller → callee values per edge of `table`, counted once per stack.
    edges: [Vec<f64>; 2],
    /// Per edge of `table`: did a stack counted on either side add to it?
    /// Only those edges are the functions' callees and callers.
    hit: Vec<bool>,
    table: &'t EdgeTable,
}

/// The distinct edges of both sides of an [`EdgeIndex`] under one id,
/// with each function's callees and callers by ascending function id:
/// built once per attribution, read by every round's [`Agg`].
#[derive(Default)]
struct EdgeTable {
    /// Per side, the table's id of each of the side's edge ids.
    of_side: [Vec<u32>; 2],
    ids: crate::normalize::FxMap<(FuncId, FuncId), u32>,
    children: Vec<Vec<(FuncId, u32)>>,
    parents: Vec<Vec<(FuncId, u32)>>,
}

impl EdgeTable {
    fn new(sides: &[SideEdges; 2], n: usize) -> EdgeTable {
        let mut ids: crate::normalize::FxMap<(FuncId, FuncId), u32> = Default::default();
        let mut children: Vec<Vec<(FuncId, u32)>> = vec![Vec::new(); n];
        let mut parents: Vec<Vec<(FuncId, u32)>> = vec![Vec::new(); n];
        let of_side = sides.each_ref().map(|(pairs, _)| {
            pairs
                .iter()
                .map(|&(p, c)| {
                    let next = ids.len() as u32;
                    *ids.entry((p, c)).or_insert_with(|| {
                        children[p as usize].push((c, next));
                        parents[c as usize].push((p, next));
                        next
                    })
                })
                .collect()
        });
        for v in children.iter_mut().chain(parents.iter_mut()) {
            v.sort_unstable_by_key(|x| x.0);
        }
        EdgeTable {
            of_side,
            ids,
            children,
            parents,
        }
    }
}

/// The caller → callee edges of one run's stacks, in their first-seen
/// order: for stack `i`, `ids[offsets[i]..offsets[i + 1]]`, each
/// edge once per stack, self-calls left out. The stacks themselves are
/// read from the run's arena ([`crate::stacks::Stacks`]), contiguous and
/// in the same order.
#[derive(Debug, Clone)]
pub(crate) struct RunEdges {
    offsets: Vec<u32>,
    ids: Vec<u32>,
    /// Whether a function occurs twice in the stack (recursion).
    recursive: Vec<bool>,
}

/// Every stack's edges as ids into a table of distinct edges per side,
/// hashed once per comparison instead of once per aggregation round.
struct EdgeIndex {
    /// Per side (baseline, candidate): distinct edges by id, and per run
    /// the ids of its stacks.
    sides: [SideEdges; 2],
    /// Both sides' edges under one id.
    table: EdgeTable,
}

/// Fewest distinct stacks (both sides) for which the gate builds the edge
/// index while the per-function statistics run.
const SPECULATIVE_INDEX: usize = 8_192;

/// One side's distinct edges by id, and per run the ids of its stacks.
pub(crate) type SideEdges = (Vec<(FuncId, FuncId)>, Vec<RunEdges>);

/// Fewest distinct baseline stacks for which the lean path indexes the
/// baseline's edges as soon as its runs are reduced (while the
/// candidate's still load), for the gate's speculative edge index.
pub(crate) const EARLY_BASE_INDEX: usize = SPECULATIVE_INDEX / 2;

/// One side's edge index (see [`EdgeIndex`]): `n`, the number of functions
/// of the comparison; given up early (an incomplete index, to be
/// discarded) once `stop` is set.
pub(crate) fn index_side(
    runs: &[RunData],
    n: usize,
    stop: &std::sync::atomic::AtomicBool,
) -> SideEdges {
    // Keyed by caller << 32 | callee: one hash round per edge.
    let mut map: crate::normalize::FxMap<u64, u32> = Default::default();
    let mut pairs = Vec::new();
    let mut seen = vec![u32::MAX; n];
    let mut stamp = 0u32;
    // Per edge id, the stamp of the last recursive stack that counted it.
    let mut edge_stamp: Vec<u32> = Vec::new();
    // Per caller, its last two edges (callee, id), the latest first: most
    // callers reach one or two callees, so most edges skip the hash lookup.
    let mut last: Vec<[(FuncId, u32); 2]> = vec![[(FuncId::MAX, 0); 2]; n];
    let mut out = Vec::with_capacity(runs.len());
    for r in runs {
        let n_stacks = r.stacks.len();
        let mut offsets = Vec::with_capacity(n_stacks + 1);
        let mut ids = Vec::with_capacity(r.stacks.frame_count());
        offsets.push(0u32);
        let mut recursives = Vec::with_capacity(n_stacks);
        for (k, (s, _)) in r.stacks.iter().enumerate() {
            if k % 1024 == 1023 && stop.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            stamp = stamp.wrapping_add(1);
            let mut recursive = false;
            for &f in s.iter() {
                if seen[f as usize] == stamp {
                    recursive = true;
                }
                seen[f as usize] = stamp;
            }
            recursives.push(recursive);
            for p in s.windows(2) {
                let e = (p[0], p[1]);
                if p[0] == p[1] {
                    continue;
                }
                let slot = &mut last[p[0] as usize];
                let id = if slot[0].0 == p[1] {
                    slot[0].1
                } else if slot[1].0 == p[1] {
                    slot.swap(0, 1);
                    slot[0].1
                } else {
                    let key = (u64::from(p[0]) << 32) | u64::from(p[1]);
                    let id = *map.entry(key).or_insert_with(|| {
                        pairs.push(e);
                        edge_stamp.push(0);
                        (pairs.len() - 1) as u32
                    });
                    *slot = [(p[1], id), slot[0]];
                    id
                };
                // An edge repeats within a stack only under recursion:
                // counted once (the stack's stamp marks it).
                if recursive {
                    if edge_stamp[id as usize] == stamp {
                        continue;
                    }
                    edge_stamp[id as usize] = stamp;
                }
                ids.push(id);
            }
            offsets.push(ids.len() as u32);
        }
        out.push(RunEdges {
            offsets,
            ids,
            recursive: recursives,
        });
    }
    (pairs, out)
}

impl EdgeIndex {
    fn new(cmp: &Comparison) -> EdgeIndex {
        Self::build(cmp, None, &std::sync::atomic::AtomicBool::new(false))
    }

    /// [`EdgeIndex::new`], with the baseline's side when it was indexed
    /// already (`base`), given up early (an incomplete index, to be
    /// discarded) once `stop` is set.
    fn build(
        cmp: &Comparison,
        base: Option<SideEdges>,
        stop: &std::sync::atomic::AtomicBool,
    ) -> EdgeIndex {
        let n = cmp.table.len();
        let sides = match base {
            Some(b) => {
                let c = index_side(&cmp.cand, n, stop);
                [b, c]
            }
            // Ids are per side, so the sides index on one thread each.
            None => std::thread::scope(|s| {
                let c = s.spawn(|| index_side(&cmp.cand, n, stop));
                let b = index_side(&cmp.base, n, stop);
                [b, c.join().unwrap_or_else(|p| std::panic::resume_unwind(p))]
            }),
        };
        // An index given up early is discarded: no table for it.
        let table = if stop.load(std::sync::atomic::Ordering::Relaxed) {
            EdgeTable::default()
        } else {
            EdgeTable::new(&sides, n)
        };
        EdgeIndex { sides, table }
    }
}

/// One side's part of an [`Agg`], as sums of the stacks' own values
/// (exact for integer sample values below 2^53), so that the stacks of a
/// dropped culprit come off the sums exactly: what is left is the sum of
/// the stacks left, whatever the order. Divided into display units when
/// read ([`SideAgg::cum`] and the like).
struct SideAgg {
    /// Per run, each function's inclusive sum (once per stack).
    cum: Vec<Vec<f64>>,
    /// Each leaf's self sum.
    flat: Vec<f64>,
    /// Sum per edge id of the side's [`EdgeIndex`] (stacks through a
    /// focus function only).
    edges: Vec<f64>,
    /// How many stacks counted add to each value (per run for `cum`): a
    /// value whose last stack is dropped is exactly zero, and an edge with
    /// no stack left is no callee or caller.
    n_cum: Vec<Vec<u32>>,
    n_flat: Vec<u32>,
    n_edges: Vec<u32>,
    /// The side's pooled denominator, and each run's sample weight.
    den: f64,
    weights: Vec<f64>,
}

impl SideAgg {
    /// One side's sums over all its stacks, with per run and stack
    /// whether the stack passes through a function flagged in `focus`
    /// (only those stacks' edges are summed: every chain the attribution
    /// walks lies in the stacks through a grown function).
    fn new(
        runs: &[RunData],
        index: &[RunEdges],
        n_edges: usize,
        n: usize,
        scale: &Scale,
        focus: &[bool],
    ) -> (Self, Vec<Vec<bool>>) {
        let mut a = SideAgg {
            cum: Vec::with_capacity(runs.len()),
            flat: vec![0.0; n],
            edges: vec![0.0; n_edges],
            n_cum: Vec::with_capacity(runs.len()),
            n_flat: vec![0; n],
            n_edges: vec![0; n_edges],
            den: runs
                .iter()
                .map(|r| Comparison::denom(r, scale).unwrap_or(r.total))
                .sum::<f64>()
                .max(1e-300),
            weights: runs
                .iter()
                .map(|r| if r.weight > 0.0 { r.weight } else { 1.0 })
                .collect(),
        };
        let mut seen = vec![u32::MAX; n];
        let mut stamp = 0u32;
        let mut through = Vec::with_capacity(runs.len());
        for (run, re) in runs.iter().zip(index) {
            // A function's sum and count side by side: one index (and
            // bounds check) per frame; split at the end.
            let mut cums: Vec<(f64, u32)> = vec![(0.0, 0); n];
            let mut focused = Vec::with_capacity(run.stacks.len());
            for (i, (s, &v)) in run.stacks.iter().enumerate() {
                let mut hot = false;
                if re.recursive[i] {
                    // Counted once per stack.
                    stamp = stamp.wrapping_add(1);
                    for &f in s {
                        hot |= focus[f as usize];
                        if seen[f as usize] != stamp {
                            seen[f as usize] = stamp;
                            let c = &mut cums[f as usize];
                            c.0 += v;
                            c.1 += 1;
                        }
                    }
                } else {
                    for &f in s {
                        hot |= focus[f as usize];
                        let c = &mut cums[f as usize];
                        c.0 += v;
                        c.1 += 1;
                    }
                }
                if let Some(&leaf) = s.last() {
                    a.flat[leaf as usize] += v;
                    a.n_flat[leaf as usize] += 1;
                }
                focused.push(hot);
                if !hot {
                    continue;
                }
                for &e in &re.ids[re.offsets[i] as usize..re.offsets[i + 1] as usize] {
                    a.edges[e as usize] += v;
                    a.n_edges[e as usize] += 1;
                }
            }
            let (c, k) = cums.into_iter().unzip();
            a.cum.push(c);
            a.n_cum.push(k);
            through.push(focused);
        }
        (a, through)
    }

    /// Leaves out the stacks through `drop` not left out before (marking
    /// them in `dropped`): their values come off the sums, at the cost of
    /// the dropped stacks only.
    fn drop_stacks(
        &mut self,
        runs: &[RunData],
        index: &[RunEdges],
        drop: FuncId,
        dropped: &mut [Vec<bool>],
        focused: &[Vec<bool>],
    ) {
        let n = self.flat.len();
        let mut seen = vec![u32::MAX; n];
        let mut stamp = 0u32;
        let runs = runs.iter().zip(index).zip(focused).zip(dropped);
        for (r, (((run, re), focused), dropped)) in runs.enumerate() {
            let (cum, n_cum) = (&mut self.cum[r], &mut self.n_cum[r]);
            for i in stacks_with(&run.stacks, drop) {
                // Dropped before, or met again (recursion).
                if dropped[i] {
                    continue;
                }
                let v = run.stacks.value_at(i);
                let s = run.stacks.stack_at(i);
                dropped[i] = true;
                stamp = stamp.wrapping_add(1);
                for &f in s {
                    let f = f as usize;
                    if seen[f] == stamp {
                        continue;
                    }
                    seen[f] = stamp;
                    take(&mut cum[f], &mut n_cum[f], v);
                }
                if let Some(&leaf) = s.last() {
                    let l = leaf as usize;
                    take(&mut self.flat[l], &mut self.n_flat[l], v);
                }
                if !focused[i] {
                    continue;
                }
                for &e in &re.ids[re.offsets[i] as usize..re.offsets[i + 1] as usize] {
                    let e = e as usize;
                    take(&mut self.edges[e], &mut self.n_edges[e], v);
                }
            }
        }
    }

    /// Inclusive values in display units (the runs' sums pooled, over the
    /// side's denominator) and in samples (each run's sum over its weight).
    fn cum(&self) -> (Vec<f64>, Vec<f64>) {
        let n = self.flat.len();
        let mut pooled = vec![0.0; n];
        let mut samples = vec![0.0; n];
        for (c, w) in self.cum.iter().zip(&self.weights) {
            for ((p, s), &x) in pooled.iter_mut().zip(&mut samples).zip(c) {
                *p += x;
                *s += x / w;
            }
        }
        for p in &mut pooled {
            *p /= self.den;
        }
        (pooled, samples)
    }
}

/// Takes one stack's value `v` off a sum of `count` stacks: exactly zero
/// once no stack is left.
#[inline]
fn take(sum: &mut f64, count: &mut u32, v: f64) {
    *count -= 1;
    *sum = if *count == 0 { 0.0 } else { *sum - v };
}

/// The stacks of `re` that contain `f`, ascending (a stack with `f`
/// twice comes twice): the frames are scanned flat, 32 at a time without
/// branching (which the compiler vectorizes), and a block with a match is
/// looked at frame by frame.
fn stacks_with(stacks: &crate::stacks::Stacks, f: FuncId) -> impl Iterator<Item = usize> + '_ {
    const BLOCK: usize = 32;
    let mut stack = 0usize;
    stacks
        .frames()
        .chunks(BLOCK)
        .enumerate()
        .filter(move |(_, b)| b.iter().fold(false, |hit, &x| hit | (x == f)))
        .flat_map(move |(k, b)| {
            b.iter()
                .enumerate()
                .filter(move |&(_, &x)| x == f)
                .map(move |(j, _)| k * BLOCK + j)
        })
        .map(move |at| {
            // The stack holding frame `at` (frames ascend, so the cursor
            // only moves forward).
            while stacks.end_at(stack) <= at {
                stack += 1;
            }
            stack
        })
}

impl<'t> Agg<'t> {
    /// Both sides' sums over every stack (see [`SideAgg::new`]), one
    /// thread each (the same sums in the same order as one after the
    /// other), with per side, run and stack whether it passes through a
    /// function flagged in `focus`.
    fn sides(
        cmp: &Comparison,
        index: &EdgeIndex,
        scale: &Scale,
        focus: &[bool],
    ) -> ([SideAgg; 2], [Vec<Vec<bool>>; 2]) {
        let n = cmp.table.len();
        let one = |runs: &[RunData], side: usize| {
            let (pairs, edges) = &index.sides[side];
            SideAgg::new(runs, edges, pairs.len(), n, scale, focus)
        };
        let ((b, fb), (c, fc)) = std::thread::scope(|s| {
            let c = s.spawn(|| one(&cmp.cand, 1));
            let b = one(&cmp.base, 0);
            (b, c.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        });
        ([b, c], [fb, fc])
    }

    /// Leaves the stacks through `drop` out of both sides' sums
    /// ([`SideAgg::drop_stacks`]), one thread each.
    fn drop_from(
        sides: &mut [SideAgg; 2],
        cmp: &Comparison,
        index: &EdgeIndex,
        drop: FuncId,
        dropped: &mut [Vec<Vec<bool>>; 2],
        focused: &[Vec<Vec<bool>>; 2],
    ) {
        let [sb, sc] = sides;
        let [db, dc] = dropped;
        std::thread::scope(|s| {
            let c = s.spawn(|| sc.drop_stacks(&cmp.cand, &index.sides[1].1, drop, dc, &focused[1]));
            sb.drop_stacks(&cmp.base, &index.sides[0].1, drop, db, &focused[0]);
            c.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        });
    }

    /// The aggregate of both sides' sums, edges under `table`'s ids.
    fn of_sides(sides: &[SideAgg; 2], table: &'t EdgeTable) -> Agg<'t> {
        let m = table.ids.len();
        let mut edges = [vec![0.0; m], vec![0.0; m]];
        let mut hit = vec![false; m];
        for (side, a) in sides.iter().enumerate() {
            for (e, (&x, &k)) in a.edges.iter().zip(&a.n_edges).enumerate() {
                if k > 0 {
                    let id = table.of_side[side][e] as usize;
                    edges[side][id] = x / a.den;
                    hit[id] = true;
                }
            }
        }
        let [(cb, nb), (cc, nc)] = sides.each_ref().map(SideAgg::cum);
        let flat = sides
            .each_ref()
            .map(|a| a.flat.iter().map(|&x| x / a.den).collect());
        Agg {
            cum: [cb, cc],
            flat,
            cum_n: [nb, nc],
            edges,
            hit,
            table,
        }
    }

    fn d_cum(&self, f: FuncId) -> f64 {
        self.cum[1][f as usize] - self.cum[0][f as usize]
    }

    fn edge(&self, p: FuncId, c: FuncId) -> [f64; 2] {
        match self.table.ids.get(&(p, c)) {
            Some(&id) if self.hit[id as usize] => self.edge_at(id),
            _ => [0.0; 2],
        }
    }

    fn edge_at(&self, id: u32) -> [f64; 2] {
        [self.edges[0][id as usize], self.edges[1][id as usize]]
    }

    /// The callees of `f` (ascending ids) with the values of their edges.
    fn children(&self, f: FuncId) -> impl Iterator<Item = (FuncId, [f64; 2])> + '_ {
        self.table.children[f as usize]
            .iter()
            .filter(|&&(_, id)| self.hit[id as usize])
            .map(|&(c, id)| (c, self.edge_at(id)))
    }

    /// The callee whose edge grew most.
    fn top_child(&self, f: FuncId) -> Option<(FuncId, [f64; 2])> {
        self.children(f)
            .max_by(|a, b| (a.1[1] - a.1[0]).total_cmp(&(b.1[1] - b.1[0])))
    }

    /// The caller whose edge into `f` grew most.
    fn top_parent(&self, f: FuncId) -> Option<FuncId> {
        self.table.parents[f as usize]
            .iter()
            .filter(|&&(_, id)| self.hit[id as usize])
            .map(|&(p, id)| (p, self.edge_at(id)))
            .max_by(|a, b| (a.1[1] - a.1[0]).total_cmp(&(b.1[1] - b.1[0])))
            .map(|x| x.0)
    }

    /// Did the function's own composition change: does one part (its self
    /// value or one callee) take a clearly larger fraction of its inclusive
    /// value than in the baseline? A function that is merely called more
    /// keeps its composition; the one that changed does not.
    fn composition_changed(&self, f: FuncId) -> bool {
        let i = f as usize;
        let (cb, cc) = (self.cum[0][i], self.cum[1][i]);
        let (nb, nc) = (self.cum_n[0][i], self.cum_n[1][i]);
        if cb <= 0.0 || cc <= 0.0 || nb <= 0.0 || nc <= 0.0 {
            return false;
        }
        let mut parts: Vec<[f64; 2]> = vec![[self.flat[0][i], self.flat[1][i]]];
        parts.extend(self.children(f).map(|(_, e)| e));
        parts.iter().any(|p| {
            let (fb, fc) = ((p[0] / cb).min(1.0), (p[1] / cc).min(1.0));
            let pooled = (fb * nb + fc * nc) / (nb + nc);
            let se = (pooled * (1.0 - pooled) * (1.0 / nb + 1.0 / nc)).sqrt();
            fc - fb >= COMPOSITION_SHIFT && (se <= 0.0 || (fc - fb) / se >= 3.0)
        })
    }
}

/// A function whose inclusive growth is a candidate for attribution.
struct Grown {
    id: FuncId,
    verdict: Verdict,
    q: Option<f64>,
    /// Its cumulative growth.
    cum_delta: f64,
}

/// The functions whose cumulative or self value grew significantly
/// beyond `max_percent`, with their verdicts, in `funcs` order.
/// With `adjusted` (per metric, flat then cum, and function id), a
/// function's q-value is the larger of its own and the adjusted one.
fn grown_functions(
    funcs: &[FunctionDelta],
    s: &Settings,
    max_percent: f64,
    adjusted: Option<&[Vec<Option<f64>>; 2]>,
) -> Vec<Grown> {
    // Significant growth of a cumulative value, or of a self value (a leaf
    // whose growth is significant while the inclusive values above it,
    // noisier, are not yet: the attribution walks up from it).
    let judge = |m: &Metric, k: usize, id: FuncId| -> Option<(Verdict, f64)> {
        let mut q = m.q_value?;
        if let Some(Some(a)) = adjusted.and_then(|a| a[k].get(id as usize)) {
            q = q.max(*a);
        }
        if !breach(m.delta, m.relative, None, Some(max_percent)) {
            return None;
        }
        if q < s.alpha {
            Some((Verdict::Fail, q))
        } else if q < s.inconclusive_alpha {
            Some((Verdict::Inconclusive, q))
        } else {
            None
        }
    };
    funcs
        .iter()
        .filter_map(|d| {
            let (verdict, q) = match (judge(&d.cum, 1, d.id), judge(&d.flat, 0, d.id)) {
                (Some(c), Some(f)) if f.0 > c.0 => f,
                (Some(c), _) => c,
                (None, Some(f)) => f,
                (None, None) => return None,
            };
            Some(Grown {
                id: d.id,
                verdict,
                q: Some(q),
                cum_delta: d.cum.delta,
            })
        })
        .collect()
}

/// Whether [`attribute`] reads the edge index: some function grew
/// significantly and its cumulative value grew.
fn needs_edge_index(grown: &[Grown]) -> bool {
    !grown.iter().all(|g| g.cum_delta <= 0.0)
}

/// Find the culprits of the significant inclusive growth.
///
/// Repeatedly: among the significantly grown functions (cum q below the
/// inconclusive level, growth above `max_percent` of their own value)
/// whose growth is not yet explained, start at the one that grew most (the
/// top of its chain); follow the callee that explains most of the growth
/// (more than half) until none does or the edge is new; the culprit is the deepest
/// frame on that chain whose own composition changed (a part of it, self
/// or a callee, grew as a fraction of it; or the new edge leaves it, or
/// below a new edge within one package, a callee new to the profile that
/// holds nearly all of its caller's growth), or the start when none did
/// (everything below was called more). Then drop
/// the stacks through the culprit and look at what growth remains.
/// Returns the culprits, per function the growth left unexplained, and
/// the round that explained each function's growth ([`Stages`]). From the
/// second round on, the functions it starts from are judged on q-values
/// adjusted among the functions the earlier rounds did not explain.
fn attribute(
    cmp: &Comparison,
    index: &std::cell::OnceCell<EdgeIndex>,
    funcs: &[FunctionDelta],
    scale: &Scale,
    unit: &str,
    s: &Settings,
    max_percent: f64,
) -> (Vec<Culprit>, Vec<f64>, Stages) {
    let n = cmp.table.len();
    let mut exclude = vec![false; n];
    let mut grown = grown_functions(funcs, s, max_percent, None);
    let mut stages = Stages {
        round_of: [vec![NEVER; n], vec![NEVER; n]],
        rounds: 0,
    };
    let name = |f: FuncId| cmp.table.funcs[f as usize].name.clone();
    let step = |a: &Agg, f: FuncId| PathStep {
        function: name(f),
        baseline: a.cum[0][f as usize],
        candidate: a.cum[1][f as usize],
        delta: a.d_cum(f),
    };
    // Packages of the few functions the walk compares, as it meets them.
    let pkg_same = |a: FuncId, b: FuncId| {
        let x = package_of(&cmp.table.funcs[a as usize].name);
        !x.is_empty() && x == package_of(&cmp.table.funcs[b as usize].name)
    };
    let mut out: Vec<Culprit> = Vec::new();
    if grown.iter().all(|g| g.cum_delta <= 0.0) {
        // Nothing grew significantly: the residual is the full growth.
        let residual = funcs.iter().fold(vec![0.0; n], |mut v, d| {
            v[d.id as usize] = d.cum.delta;
            v
        });
        return (Vec::new(), residual, stages);
    }
    let mut focus = vec![false; n];
    for g in &grown {
        focus[g.id as usize] = true;
    }
    let index = index.get_or_init(|| EdgeIndex::new(cmp));
    let table = &index.table;
    let (mut sides, focused) = Agg::sides(cmp, index, scale, &focus);
    let mut dropped = focused.each_ref().map(|runs| {
        runs.iter()
            .map(|f| vec![false; f.len()])
            .collect::<Vec<_>>()
    });
    let full = Agg::of_sides(&sides, table);
    let mut agg = full.clone();
    let full_delta: Vec<f64> = (0..n as FuncId).map(|f| agg.d_cum(f)).collect();
    let d_flat = |a: &Agg, f: usize| a.flat[1][f] - a.flat[0][f];
    let full_flat: Vec<f64> = (0..n).map(|f| d_flat(&full, f)).collect();
    let mut used = vec![false; n];
    while out.len() < MAX_CULPRITS {
        if stages.rounds > 0 {
            let adjusted = [0, 1].map(|k| stages.q_at(funcs, k, stages.rounds).0);
            grown = grown_functions(funcs, s, max_percent, Some(&adjusted));
        }
        // The unexplained significant growth at the top of its chain.
        let start = grown
            .iter()
            .filter(|g| !used[g.id as usize] && !exclude[g.id as usize])
            .filter(|g| {
                let d = agg.d_cum(g.id);
                d > 0.0 && d >= EXPLAIN * full_delta[g.id as usize]
            })
            .max_by(|a, b| {
                agg.d_cum(a.id)
                    .total_cmp(&agg.d_cum(b.id))
                    .then(b.id.cmp(&a.id))
            });
        let Some(start) = start else { break };
        // Down: follow the callee that explains most of the growth; stop
        // at an edge absent from the baseline (or a callee that is) into
        // another package: the library below only does what it was asked.
        let mut chain = vec![start.id];
        let mut x = start.id;
        while chain.len() < 256 {
            let dx = agg.d_cum(x);
            let Some((c, e)) = agg.top_child(x) else {
                break;
            };
            if e[1] - e[0] <= EXPLAIN * dx || chain.contains(&c) {
                break;
            }
            chain.push(c);
            if (e[0] <= 0.0 || agg.cum[0][c as usize] <= 0.0) && !pkg_same(x, c) {
                break;
            }
            x = c;
        }
        // Up: callers whose edge carries most of the start's growth (with
        // share values the ancestors need not grow), until a caller that
        // did not call it in the baseline.
        let mut x = start.id;
        while chain.len() < 512 {
            let dx = agg.d_cum(x);
            let Some(p) = agg.top_parent(x) else { break };
            let e = agg.edge(p, x);
            if e[1] - e[0] <= EXPLAIN * dx || chain.contains(&p) {
                break;
            }
            chain.insert(0, p);
            if is_new(&agg, p, x) {
                break;
            }
            x = p;
        }
        // The introduction: the topmost new (absent or negligible) edge on
        // the chain; its callee's own edge below, when absent from the
        // baseline, moves it one frame down (the callee existed and began
        // calling something new). Else the deepest frame whose own
        // composition changed; else the top of the growth.
        let top_new = (1..chain.len()).find(|&i| is_new(&agg, chain[i - 1], chain[i]));
        let (culprit, new_edge) = match top_new {
            Some(t) => {
                // The caller of the first new edge, or a callee of the same
                // package below it that does the new work itself (its self
                // value grew) or began a new call of its own.
                let mut culprit = chain[t - 1];
                let mut edge = (chain[t - 1], chain[t]);
                let mut i = t;
                while i < chain.len() && pkg_same(chain[i - 1], chain[i]) {
                    let c = chain[i];
                    let dc = agg.d_cum(c);
                    if agg.flat[1][c as usize] - agg.flat[0][c as usize] >= EXPLAIN * dc {
                        culprit = c;
                        break;
                    }
                    match chain.get(i + 1) {
                        Some(&k) if negligible(&agg, c, k) => {
                            culprit = c;
                            edge = (c, k);
                            i += 1;
                        }
                        // The chain ends here (no one callee carries half
                        // of the growth: new work spread over several
                        // library calls, e.g. allocations), the callee is
                        // itself new to the profile and holds nearly all
                        // of its caller's growth: the new work is its
                        // body, whoever began calling it.
                        None if absent(&agg, c)
                            && agg.d_cum(c) >= ABSORB * agg.d_cum(chain[i - 1]) =>
                        {
                            culprit = c;
                            break;
                        }
                        _ => break,
                    }
                }
                (culprit, Some(edge))
            }
            None => (
                chain
                    .iter()
                    .rev()
                    .copied()
                    .find(|&f| agg.composition_changed(f))
                    .unwrap_or_else(|| {
                        // Nothing changed shape: the growth is the chain's
                        // end doing more in its own code (a slower leaf),
                        // else everything below the start was called more.
                        // (Within its caller's package: a runtime or
                        // library leaf is more likely called more.)
                        let end = *chain.last().unwrap_or(&start.id);
                        let e = end as usize;
                        let same = chain.len() >= 2 && pkg_same(chain[chain.len() - 2], end);
                        if same && agg.flat[1][e] - agg.flat[0][e] >= EXPLAIN * agg.d_cum(end) {
                            end
                        } else {
                            start.id
                        }
                    }),
                None,
            ),
        };
        // A stack switch names nothing: `runtime.systemstack` and
        // `runtime.mcall` run whatever closure their caller hands them
        // (the allocator's, the garbage collector's, the scheduler's), so
        // their caller on the chain is the culprit. Without one (the
        // switch is the top of the chain: its growth is spread over the
        // closures of several callers, none carrying most of it), this
        // start names nothing; the closures' own growth is found from
        // them.
        let culprit = match chain.iter().position(|&f| f == culprit) {
            Some(i) if is_stack_switch(&cmp.table.funcs[culprit as usize].name) => {
                if i == 0 {
                    used[start.id as usize] = true;
                    continue;
                }
                chain[i - 1]
            }
            _ => culprit,
        };
        let new_edge = new_edge.map(|(p, c)| (p, c, full.edge(p, c)));
        let idx = chain.iter().position(|&f| f == culprit).unwrap_or(0);
        // Path from a root to the top of the chain (largest growing caller each step).
        let mut up = Vec::new();
        let mut p = chain[0];
        while let Some(q) = agg.top_parent(p) {
            if up.contains(&q) || chain.contains(&q) || up.len() > 256 {
                break;
            }
            up.push(q);
            p = q;
        }
        up.reverse();
        let path: Vec<PathStep> = up
            .iter()
            .chain(chain[..=idx].iter())
            .map(|&f| step(&full, f))
            .collect();
        // Most of the culprit's growth went to earlier culprits: its values
        // and callees are those of the stacks left (this round's growth),
        // and its own test does not speak for them (the verdict below).
        let fd = full_delta[culprit as usize];
        let outside_earlier = !out.is_empty() && fd > 0.0 && agg.d_cum(culprit) < EXPLAIN * fd;
        let shown = if outside_earlier { &agg } else { &full };
        let mut kids: Vec<(FuncId, [f64; 2])> = shown
            .children(culprit)
            .filter(|(_, e)| e[1] > e[0])
            .collect();
        kids.sort_by(|a, b| {
            (b.1[1] - b.1[0])
                .total_cmp(&(a.1[1] - a.1[0]))
                .then(a.0.cmp(&b.0))
        });
        let explained_by: Vec<PathStep> = kids
            .iter()
            .take(3)
            .map(|&(c, e)| PathStep {
                function: name(c),
                baseline: e[0],
                candidate: e[1],
                delta: e[1] - e[0],
            })
            .collect();
        // The culprit's own test speaks for this round's growth only while
        // most of its growth is still unexplained; a caller above the
        // start whose growth earlier culprits explained (a second new call
        // from `main.reconcile`) takes the start's verdict.
        let g = grown.iter().find(|g| g.id == culprit && !outside_earlier);
        let (verdict, q) = match g {
            Some(g) => (g.verdict, g.q),
            None => (start.verdict, start.q),
        };
        let cs = step(shown, culprit);
        let pt = |v: f64| fmt_points(v, unit);
        let mut msg = format!(
            "{} {} cum{} ({} -> {}){}",
            cs.function,
            pt(cs.delta),
            if outside_earlier { OUTSIDE_EARLIER } else { "" },
            crate::report::format_value(cs.baseline, unit),
            crate::report::format_value(cs.candidate, unit),
            match explained_by.first() {
                Some(k) => format!(", of which {} {}", k.function, pt(k.delta)),
                None => String::new(),
            }
        );
        let ne = new_edge;
        let edge_share = |caller: FuncId, e: [f64; 2]| {
            let c = full.cum[1][caller as usize];
            if c > 0.0 {
                e[1] / c
            } else {
                0.0
            }
        };
        if let Some((caller, callee, e)) = ne {
            msg.push_str(&format!(
                "; new call {} -> {} ({:.0}% of {}'s samples)",
                name(caller),
                name(callee),
                edge_share(caller, e) * 100.0,
                name(caller)
            ));
        }
        // A caller that did not grow (its share fell while a new call
        // appeared under it: plain shares, diluted by growth elsewhere) is
        // no culprit of its own: the new call is, and its path ends at it.
        let caller_shrank = ne.is_some() && cs.delta <= 0.0;
        if !caller_shrank {
            out.push(Culprit {
                kind: CulpritKind::Frame,
                function: cs.function.clone(),
                sample_type: cmp.sample_type.to_string(),
                unit: unit.to_string(),
                baseline: cs.baseline,
                candidate: cs.candidate,
                delta: cs.delta,
                q_value: q,
                verdict,
                outside_earlier,
                path: path.clone(),
                explained_by: explained_by.clone(),
                message: msg,
                allowed: None,
                explains: None,
            });
        }
        if let Some((caller, callee, e)) = ne {
            let share = edge_share(caller, e);
            let mut path: Vec<PathStep> = match path.iter().position(|p| p.function == name(caller))
            {
                Some(i) => path[..=i].to_vec(),
                // The caller is below the culprit (a stack switch between
                // them): the path goes on down the chain to it.
                None => {
                    let mut p = path.clone();
                    if let Some(j) = chain.iter().position(|&f| f == caller).filter(|&j| j > idx) {
                        p.extend(chain[idx + 1..=j].iter().map(|&f| step(&full, f)));
                    }
                    p
                }
            };
            path.push(PathStep {
                function: name(callee),
                baseline: e[0],
                candidate: e[1],
                delta: e[1] - e[0],
            });
            out.push(Culprit {
                kind: CulpritKind::NewEdge {
                    caller: name(caller),
                    callee: name(callee),
                },
                function: name(callee),
                sample_type: cmp.sample_type.to_string(),
                unit: unit.to_string(),
                baseline: e[0],
                candidate: e[1],
                delta: e[1] - e[0],
                q_value: q,
                verdict,
                outside_earlier: false,
                path,
                allowed: None,
                explains: None,
                explained_by: Vec::new(),
                message: format!(
                    "{} -> {}: new, {} ({:.0}% of {}'s samples)",
                    name(caller),
                    name(callee),
                    pt(e[1] - e[0]),
                    share * 100.0,
                    name(caller)
                ),
            });
        }
        used[culprit as usize] = true;
        used[start.id as usize] = true;
        exclude[culprit as usize] = true;
        Agg::drop_from(&mut sides, cmp, index, culprit, &mut dropped, &focused);
        let next = Agg::of_sides(&sides, table);
        let part = |a: &Agg, b: &Agg, k: usize| -> Vec<f64> {
            (0..n)
                .map(|i| {
                    let (x, y) = if k == 0 {
                        (&a.flat, &b.flat)
                    } else {
                        (&a.cum, &b.cum)
                    };
                    (x[1][i] - x[0][i]) - (y[1][i] - y[0][i])
                })
                .collect()
        };
        let explains = std::sync::Arc::new([part(&agg, &next, 0), part(&agg, &next, 1)]);
        for c in out.iter_mut().rev() {
            if c.explains.is_some() {
                break;
            }
            c.explains = Some(explains.clone());
        }
        // The functions this round explained: at most half of their
        // growth is left.
        for (k, full_k) in [&full_flat, &full_delta].into_iter().enumerate() {
            for (f, &d) in full_k.iter().enumerate() {
                let left = if k == 0 {
                    d_flat(&next, f)
                } else {
                    next.d_cum(f as FuncId)
                };
                if stages.round_of[k][f] == NEVER && d > 0.0 && left <= EXPLAIN * d {
                    stages.round_of[k][f] = stages.rounds;
                }
            }
        }
        stages.rounds += 1;
        agg = next;
    }
    let residual: Vec<f64> = (0..n as FuncId).map(|f| agg.d_cum(f)).collect();
    (out, residual, stages)
}

/// Go runtime functions that only switch stacks to run a closure.
fn is_stack_switch(name: &str) -> bool {
    matches!(name, "runtime.systemstack" | "runtime.mcall")
}

/// Is the edge `p -> c` absent or negligible in the baseline (at most
/// [`NEW_EDGE`] of its candidate value)?
fn negligible(agg: &Agg, p: FuncId, c: FuncId) -> bool {
    let e = agg.edge(p, c);
    e[1] > 0.0 && e[0] <= NEW_EDGE * e[1]
}

/// Is the function `f` new to the profile: its inclusive baseline value
/// negligible (at most [`NEW_EDGE`] of its candidate value)?
fn absent(agg: &Agg, f: FuncId) -> bool {
    let i = f as usize;
    agg.cum[1][i] > 0.0 && agg.cum[0][i] <= NEW_EDGE * agg.cum[1][i]
}

/// Is the edge `p -> c` new: negligible in the baseline while the caller
/// was there?
fn is_new(agg: &Agg, p: FuncId, c: FuncId) -> bool {
    negligible(agg, p, c) && agg.cum[0][p as usize] > 0.0
}

/// The package (or crate, or namespace) of a normalized function name:
/// `k8s.io/client-go/rest.(*Request).Do` -> `k8s.io/client-go/rest`,
/// `main.reconcile` -> `main`, `std::fmt::write` -> `std`; empty for a bare
/// symbol (`memeqbody`).
pub fn package_of(name: &str) -> &str {
    if let Some(i) = name.find("::") {
        return &name[..i];
    }
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].find('.') {
        Some(d) => &name[..slash + d],
        None => "",
    }
}

/// A delta in points (for `%` units) or in the unit.
fn fmt_points(v: f64, unit: &str) -> String {
    if unit == "%" {
        format!("{:+.1} pt", v * 100.0)
    } else {
        format!("{:+} {unit}", fmt_num(v))
    }
}

/// Name of the built-in flat rule ([`default_rule`]).
const DEFAULT_FLAT_RULE: &str = "default-share-growth";

/// Marks [`Stages::round_of`] for a function no round explained.
const NEVER: u32 = u32::MAX;

/// The second stage of the built-in rules' multiple testing.
///
/// Benjamini-Hochberg over every tested function lets a function through
/// at a larger p-value the more functions a regression moved: with 40 of
/// 60 functions moved, a chance excess of a few samples in an unchanged
/// function passes at two thirds of the level. Once the attribution's
/// first culprits explain a regression (their own growth and their
/// subtrees'), what is left are claims of changes of their own. So a
/// finding of the built-in rules, and a later culprit, is adjusted again
/// among the tested functions that the rounds before its own did not
/// explain (at most half of their growth left), and keeps the larger of
/// its two q-values: the verdict can only move towards `pass`. What the
/// first round explains keeps its q-value; a function no round explains
/// (or that shrank) is adjusted among all functions no round explained.
#[derive(Clone, Debug)]
struct Stages {
    /// Per metric (flat, cum) and function id: the round (from 0) that
    /// explained its growth, [`NEVER`] when none did.
    round_of: [Vec<u32>; 2],
    /// The rounds the attribution ran.
    rounds: u32,
}

impl Stages {
    /// Per function id, the q-value of metric `k` (0 flat, 1 cum) adjusted
    /// among the tested functions the rounds before `j` did not explain
    /// (None for the others), and the size of that family.
    fn q_at(&self, funcs: &[FunctionDelta], k: usize, j: u32) -> (Vec<Option<f64>>, usize) {
        let metric = |d: &FunctionDelta| {
            if k == 0 {
                d.flat.p_value
            } else {
                d.cum.p_value
            }
        };
        let round = |d: &FunctionDelta| {
            self.round_of[k]
                .get(d.id as usize)
                .copied()
                .unwrap_or(NEVER)
        };
        let family: Vec<(FuncId, f64)> = funcs
            .iter()
            .filter(|d| round(d) >= j)
            .filter_map(|d| metric(d).map(|p| (d.id, p)))
            .collect();
        let ps: Vec<f64> = family.iter().map(|f| f.1).collect();
        let mut q = vec![None; self.round_of[k].len()];
        for (&(id, _), qi) in family.iter().zip(stats::benjamini_hochberg(&ps)) {
            if let Some(slot) = q.get_mut(id as usize) {
                *slot = Some(qi);
            }
        }
        (q, family.len())
    }
}

/// Adjusts the built-in rules' findings as [`Stages`] says: each is judged
/// again on the q-value of its own stage (the round that explained it,
/// else after the last round) when that is larger; a finding whose new
/// verdict is `pass` is dropped.
/// `named`: the primary statistics of (at least) the findings' functions,
/// by name.
fn retest_by_stage(
    findings: &mut Vec<Finding>,
    funcs: &[FunctionDelta],
    named: &FxMap<&str, &FunctionDelta>,
    stages: &Stages,
    s: &Settings,
    scale: &Scale,
) {
    // Per (metric, stage): the adjusted q-values and the family's size.
    type Adjusted = (Vec<Option<f64>>, usize);
    let mut cache: FxMap<(usize, u32), Adjusted> = FxMap::default();
    findings.retain_mut(|f| {
        let (k, metric) = match (f.rule.as_str(), f.metric) {
            (DEFAULT_FLAT_RULE, Some(m @ MetricKind::Flat)) => (0, m),
            (DEFAULT_CUM_RULE, Some(m @ MetricKind::Cum)) => (1, m),
            _ => return true,
        };
        let (Some(d), Some(q1)) = (named.get(f.function.as_str()), f.q_value) else {
            return true;
        };
        let j = stages.round_of[k]
            .get(d.id as usize)
            .copied()
            .unwrap_or(NEVER)
            .min(stages.rounds);
        if j == 0 {
            return true;
        }
        let (q, family) = cache
            .entry((k, j))
            .or_insert_with(|| stages.q_at(funcs, k, j));
        let Some(q2) = q
            .get(d.id as usize)
            .copied()
            .flatten()
            .filter(|&q2| q2 > q1)
        else {
            return true;
        };
        let verdict = match f.verdict {
            Verdict::Fail if q2 < s.alpha => Verdict::Fail,
            Verdict::Fail | Verdict::Inconclusive if q2 < s.inconclusive_alpha => {
                Verdict::Inconclusive
            }
            Verdict::Improved if q2 < s.alpha => Verdict::Improved,
            _ => return false,
        };
        let m = if k == 0 { &d.flat } else { &d.cum };
        f.q_value = Some(q2);
        if verdict == Verdict::Inconclusive && f.verdict != Verdict::Inconclusive {
            set_needed(f, m, s.alpha, *family);
        }
        f.verdict = verdict;
        f.message = relative_message(metric, scale, m, q2);
        true
    });
}

/// The samples and runs per side an inconclusive per-function finding
/// would need: Bonferroni over the `tested` functions, a conservative
/// stand-in for the BH threshold the change must pass.
fn set_needed(f: &mut Finding, m: &Metric, alpha: f64, tested: usize) {
    let level = alpha / tested.max(1) as f64;
    if let Some((e, r)) = m.needed(m.delta, level) {
        let now = m.runs.0.max(m.runs.1) as u64;
        let r = r.max(now + 1);
        f.samples_needed = Some(e.max(m.exposure_per_run * r as f64).ceil());
        f.runs_needed = Some(r);
    }
}

/// The message of a per-function finding of a relative rule.
fn relative_message(metric: MetricKind, scale: &Scale, m: &Metric, q: f64) -> String {
    format!(
        "{} {} {:.2}% -> {:.2}% ({:+.2} points, {}), q={}",
        match metric {
            MetricKind::Flat => "flat",
            MetricKind::Cum => "cum",
        },
        scale_word(scale),
        m.baseline * 100.0,
        m.candidate * 100.0,
        m.delta * 100.0,
        m.relative
            .map(|r| format!("{:+.1}%", r * 100.0))
            .unwrap_or_else(|| "new".into()),
        fmt_p(Some(q)),
    )
}

/// How a relative finding names its values.
fn scale_word(scale: &Scale) -> &'static str {
    match scale {
        Scale::Compositional => "value (baseline units)",
        _ => "share",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::{NormalizeOptions, Normalizer};

    #[test]
    fn the_built_in_pattern_matches_as_the_regex_does() {
        let dot = Regex::new(".").unwrap();
        let other = Regex::new("^main\\.").unwrap();
        for name in ["", "\n", "\n\n", "a", "\na", "é", "main.f", "x\nmain.f"] {
            assert_eq!(matches_function(&dot, name), dot.is_match(name), "{name:?}");
            assert_eq!(
                matches_function(&other, name),
                other.is_match(name),
                "{name:?}"
            );
        }
    }

    /// Per run, each function's raw inclusive sum by name, and the raw sum
    /// of each edge by (caller, callee) name, of one side.
    #[allow(clippy::type_complexity)]
    fn named(
        cmp: &Comparison,
        side: &SideAgg,
        edges: &SideEdges,
    ) -> (
        Vec<std::collections::BTreeMap<String, f64>>,
        std::collections::BTreeMap<(String, String), f64>,
    ) {
        let name = |f: FuncId| cmp.table.funcs[f as usize].name.clone();
        let runs = side
            .cum
            .iter()
            .map(|c| {
                c.iter()
                    .enumerate()
                    .filter(|(_, &x)| x != 0.0)
                    .map(|(f, &x)| (name(f as FuncId), x))
                    .collect()
            })
            .collect();
        let e = edges
            .0
            .iter()
            .zip(&side.n_edges)
            .zip(&side.edges)
            .filter(|((_, &k), _)| k > 0)
            .map(|((&(p, c), _), &x)| ((name(p), name(c)), x))
            .collect();
        (runs, e)
    }

    /// A side's sums after dropping the stacks through `drop`, and a new
    /// comparison's sums of the stacks left, for folded profiles (two runs
    /// per side, recursion, a function only below `drop`).
    #[test]
    fn dropping_stacks_leaves_exactly_the_sums_of_the_stacks_left() {
        let runs = [
            "main;a;b 3\nmain;a;c 5\nmain;d;a;b 7\nmain;a;a;b 2\nmain;d 11\nmain;d;e 13\n",
            "main;a;c 1\nmain;d;e;d;e 17\nmain;d 19\nmain;e;a 23\n",
        ];
        let left = |text: &str| -> String {
            text.lines()
                .filter(|l| !l.split([';', ' ']).any(|f| f == "a"))
                .map(|l| format!("{l}\n"))
                .collect()
        };
        let norm = Normalizer::new(NormalizeOptions::default());
        let parse = |t: &str| crate::folded::parse(t.as_bytes()).expect("folded");
        let full: Vec<Profile> = runs.iter().map(|t| parse(t)).collect();
        let kept: Vec<Profile> = runs.iter().map(|t| parse(&left(t))).collect();
        fn side(ps: &[Profile]) -> Vec<(String, &Profile)> {
            ps.iter().map(|p| ("run".to_string(), p)).collect()
        }
        let sums = |ps: &[Profile], drop: Option<&str>| {
            let cmp = Comparison::new(&side(ps), &side(ps), None, &norm).expect("comparison");
            let n = cmp.table.len();
            let index = EdgeIndex::new(&cmp);
            let (mut sides, focused) = Agg::sides(&cmp, &index, &Scale::Share, &vec![true; n]);
            if let Some(name) = drop {
                let f = cmp.table.funcs.iter().position(|x| x.name == name).unwrap();
                let mut dropped = focused
                    .each_ref()
                    .map(|r| r.iter().map(|f| vec![false; f.len()]).collect::<Vec<_>>());
                Agg::drop_from(
                    &mut sides,
                    &cmp,
                    &index,
                    f as FuncId,
                    &mut dropped,
                    &focused,
                );
                // Every count is back to what the stacks left give.
                assert!(sides[0].n_cum[0][f] == 0 && sides[0].n_cum[1][f] == 0);
            }
            named(&cmp, &sides[0], &index.sides[0])
        };
        let (dropped, fresh) = (sums(&full, Some("a")), sums(&kept, None));
        assert_eq!(dropped, fresh);
        // `c` is only ever below `a`: gone, with its edge.
        assert!(dropped.0.iter().all(|r| !r.contains_key("c")));
        assert!(!dropped.1.contains_key(&("a".to_string(), "c".to_string())));
        // Recursion counts a stack once: `main;d;e;d;e` adds 17 to `e`.
        assert_eq!(dropped.0[1]["e"], 17.0);
    }

    #[test]
    fn package_of_go_rust_and_bare_names() {
        assert_eq!(package_of("main.reconcile"), "main");
        assert_eq!(package_of("fmt.(*pp).doPrintf"), "fmt");
        assert_eq!(
            package_of("k8s.io/client-go/rest.(*Request).Do"),
            "k8s.io/client-go/rest"
        );
        assert_eq!(package_of("regexp/syntax.Parse"), "regexp/syntax");
        assert_eq!(package_of("std::fmt::write"), "std");
        assert_eq!(package_of("memeqbody"), "");
    }
}
