//! Differential flame graphs: the merged frame tree of both sides, tested
//! frame by frame, rendered as SVG (via `inferno`) or fed to the HTML
//! report's own renderer.
//!
//! A frame of a flame graph is a *path*: a stack prefix from a root to the
//! frame. [`FrameTree::build`] merges the normalized stacks of every run of
//! both sides into one tree of such paths and keeps, per node and per run,
//! the node's inclusive value (every sample whose stack starts with the
//! path) and self value (samples whose stack *is* the path). Each node above
//! the noise floor is then tested with the crate's count statistics
//! ([`crate::compare::test_entity_moderated`]: pooled counts per side, the
//! between-run dispersion moderated by a common jitter estimated from all
//! tested nodes, or the robust single-run jitter with one run per side), and
//! the p-values are adjusted with Benjamini–Hochberg across the tested
//! nodes, separately for inclusive and self values.
//!
//! Colour (default: the *inclusive* change, [`ColorBy::SelfValue`] as an
//! option) is given only to nodes whose change is significant (BH q <
//! alpha): red when the value grew, blue when it shrank, graded from pale
//! to saturated by the size of the change relative to the largest
//! significant change (square-root scale, so small significant changes stay
//! visible). Everything else is neutral grey: noise never gets a colour.
//!
//! Labels carry only the function name; statistics go to the tooltip. The
//! SVG output is deterministic.

use std::collections::HashMap;
use std::io::{self, Write};

use inferno::flamegraph::{self, color::Color, Options, TextTruncateDirection};
use serde::Serialize;

use crate::compare::{run_counts, test_entity_moderated, Comparison, Obs};
use crate::normalize::{FuncId, FxMap, RunData, Scale};
use crate::stats::{self, CountModel, DispersionPrior, RunCount};

/// Nodes kept while merging stacks; deeper prefixes of further stacks are
/// folded into their deepest kept ancestor (counted in
/// [`FrameTree::truncated_stacks`]).
pub const MAX_TREE_NODES: usize = 500_000;

/// What a frame's colour shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorBy {
    /// The change of the frame's inclusive value (the default).
    #[default]
    Inclusive = 0,
    /// The change of the frame's self value.
    #[serde(rename = "self")]
    SelfValue = 1,
}

impl ColorBy {
    /// Name used in legends.
    pub fn as_str(self) -> &'static str {
        match self {
            ColorBy::Inclusive => "inclusive",
            ColorBy::SelfValue => "self",
        }
    }
}

/// Options for [`FrameTree::build`] and [`render`].
#[derive(Debug, Clone)]
pub struct DiffGraphOptions {
    /// Width from the baseline instead of the candidate (SVG only).
    pub base_width: bool,
    /// What the colour shows.
    pub color_by: ColorBy,
    /// Significance level (on BH q-values) for colouring.
    pub alpha: f64,
    /// Nodes whose share is below this fraction on both sides are not tested.
    pub noise_floor: f64,
    /// Factor that puts candidate values in baseline units: a candidate
    /// value is `value / (candidate total × candidate_scale)` of the
    /// baseline's total. 1 compares plain shares; a compositional scale
    /// estimated from unchanged functions (the gate's) makes unchanged
    /// frames compare equal when a regression grows the candidate's total.
    pub candidate_scale: f64,
    /// Title at the top of the graph.
    pub title: String,
}

impl Default for DiffGraphOptions {
    fn default() -> Self {
        DiffGraphOptions {
            base_width: false,
            color_by: ColorBy::Inclusive,
            alpha: 0.01,
            noise_floor: 0.005,
            candidate_scale: 1.0,
            title: "profdiff differential flame graph".into(),
        }
    }
}

/// Neutral colour for frames without a significant change.
pub const NEUTRAL: Color = Color {
    r: 221,
    g: 221,
    b: 221,
};

/// Colour of frames below the noise floor (not tested).
pub const UNTESTED: Color = Color {
    r: 236,
    g: 236,
    b: 236,
};

/// Colour for a significant change: `x` in [-1, 1] is the change relative
/// to the largest significant change (growth positive). Graded on a
/// square-root scale from a pale tint to a saturated red or blue.
pub fn change_color(x: f64) -> Color {
    let x = x.clamp(-1.0, 1.0);
    let k = 0.3 + 0.7 * x.abs().sqrt();
    let mix = |pale: f64, full: f64| (pale + (full - pale) * k).round() as u8;
    if x >= 0.0 {
        // pale (255,205,195) .. saturated (215,38,38)
        Color {
            r: mix(255.0, 215.0),
            g: mix(205.0, 38.0),
            b: mix(195.0, 38.0),
        }
    } else {
        // pale (200,215,255) .. saturated (40,80,215)
        Color {
            r: mix(200.0, 40.0),
            g: mix(215.0, 80.0),
            b: mix(255.0, 215.0),
        }
    }
}

/// A node's value on both sides and its test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct NodeStat {
    /// Pooled baseline value (fraction of the baseline's total).
    pub baseline: f64,
    /// Pooled candidate value (fraction of the candidate's total, or of the
    /// baseline's total under a compositional scale).
    pub candidate: f64,
    /// `candidate - baseline`.
    pub delta: f64,
    /// Two-sided p-value (None: below the noise floor, not tested).
    pub p_value: Option<f64>,
    /// Benjamini–Hochberg q-value across the tested nodes.
    pub q_value: Option<f64>,
}

/// One frame (stack prefix) of the merged tree.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrameNode {
    /// Function id in the comparison's table (`u32::MAX` for the root).
    pub func: FuncId,
    /// Function name (normalized).
    pub name: String,
    /// Parent node (None for the root).
    pub parent: Option<u32>,
    /// Depth (0 = the root, 1 = the outermost frames).
    pub depth: u32,
    /// Children, sorted by name.
    pub children: Vec<u32>,
    /// Inclusive values.
    pub incl: NodeStat,
    /// Self values.
    pub self_value: NodeStat,
    /// Pooled baseline samples through this frame.
    pub base_samples: f64,
    /// Pooled candidate samples through this frame.
    pub cand_samples: f64,
    /// Baseline samples whose stack is this path (for the SVG layout).
    pub base_self_samples: f64,
    /// Candidate samples whose stack is this path.
    pub cand_self_samples: f64,
    /// Significant change relative to the largest significant change of the
    /// coloured metric ([`FrameTree::color_by`]), in [-1, 1]; None when not
    /// significant.
    pub change: Option<f64>,
    /// The same for each metric, indexed by [`ColorBy`] (inclusive, self).
    pub changes: [Option<f64>; 2],
}

impl FrameNode {
    /// The statistic the colour shows.
    pub fn colored(&self, by: ColorBy) -> &NodeStat {
        match by {
            ColorBy::Inclusive => &self.incl,
            ColorBy::SelfValue => &self.self_value,
        }
    }

    /// Fill colour of the frame when colouring by `by`.
    pub fn color(&self, by: ColorBy) -> Color {
        match self.changes[by as usize] {
            Some(x) => change_color(x),
            None if self.colored(by).p_value.is_none() => UNTESTED,
            None => NEUTRAL,
        }
    }
}

/// Both sides merged into one tree of stack prefixes, every node tested.
#[derive(Debug, Clone)]
pub struct FrameTree {
    /// Nodes; index 0 is the root (all samples).
    pub nodes: Vec<FrameNode>,
    /// What the colour shows.
    pub color_by: ColorBy,
    /// Significance level of the colouring.
    pub alpha: f64,
    /// Noise floor (fraction) under which nodes are not tested.
    pub noise_floor: f64,
    /// Candidate scale (1 = plain shares).
    pub candidate_scale: f64,
    /// Nodes tested (the BH family size).
    pub tested: usize,
    /// Largest significant |delta| of the coloured metric (0 when none).
    pub max_change: f64,
    /// Nodes tested per metric, indexed by [`ColorBy`].
    pub tested_by: [usize; 2],
    /// Largest significant |delta| per metric, indexed by [`ColorBy`].
    pub max_changes: [f64; 2],
    /// Stacks cut short because the tree reached [`MAX_TREE_NODES`].
    pub truncated_stacks: usize,
    /// Runs per side.
    pub runs: (usize, usize),
    /// Sample type (`kind/unit`).
    pub sample_type: String,
}

/// Per-run values of every node while building.
struct Acc {
    nruns: usize,
    incl: Vec<f64>,
    selfv: Vec<f64>,
    func: Vec<FuncId>,
    parent: Vec<u32>,
    depth: Vec<u32>,
    child: FxMap<(u32, FuncId), u32>,
    truncated: usize,
}

impl Acc {
    fn add_node(&mut self, parent: u32, f: FuncId, depth: u32) -> u32 {
        let id = self.func.len() as u32;
        self.func.push(f);
        self.parent.push(parent);
        self.depth.push(depth);
        self.incl.extend(std::iter::repeat_n(0.0, self.nruns));
        self.selfv.extend(std::iter::repeat_n(0.0, self.nruns));
        id
    }

    fn insert(&mut self, run: usize, stack: &[FuncId], v: f64) {
        let n = self.nruns;
        let mut node = 0u32;
        self.incl[run] += v;
        for &f in stack {
            let next = match self.child.get(&(node, f)) {
                Some(&c) => c,
                None if self.func.len() >= MAX_TREE_NODES => {
                    self.truncated += 1;
                    break;
                }
                None => {
                    let d = self.depth[node as usize] + 1;
                    let c = self.add_node(node, f, d);
                    self.child.insert((node, f), c);
                    c
                }
            };
            node = next;
            self.incl[node as usize * n + run] += v;
        }
        self.selfv[node as usize * n + run] += v;
    }
}

fn prior_for(
    items: &[(Vec<RunCount>, Vec<RunCount>)],
    model: CountModel,
    runs: (usize, usize),
) -> Option<DispersionPrior> {
    if runs.0 == 1 && runs.1 == 1 {
        let single: Vec<(RunCount, RunCount)> = items.iter().map(|(a, b)| (a[0], b[0])).collect();
        let kappa = stats::robust_kappa_single(&single, model);
        let df = (0.37 * single.len() as f64).max(1.0);
        return (kappa > 0.0).then_some(DispersionPrior { kappa, df });
    }
    let (mut nu, mut de) = (0.0, 0.0);
    for (a, b) in items {
        if let Some((x, y)) = stats::jitter_moments(a, b, model) {
            nu += x;
            de += y;
        }
    }
    let df = 2.0 * (runs.0 + runs.1).saturating_sub(2) as f64;
    (de > 0.0 && df > 0.0).then(|| DispersionPrior {
        kappa: (nu / de).max(0.0),
        df,
    })
}

impl FrameTree {
    /// Merge both sides of `cmp` and test every node above the noise floor.
    pub fn build(cmp: &Comparison, opts: &DiffGraphOptions) -> FrameTree {
        let runs: Vec<&RunData> = cmp.base.iter().chain(&cmp.cand).collect();
        let kb = cmp.base.len();
        let nruns = runs.len();
        let mut acc = Acc {
            nruns,
            incl: Vec::new(),
            selfv: Vec::new(),
            func: Vec::new(),
            parent: Vec::new(),
            depth: Vec::new(),
            child: FxMap::default(),
            truncated: 0,
        };
        acc.add_node(u32::MAX, u32::MAX, 0);
        // Insert stacks in a fixed order so node ids are deterministic.
        for (r, run) in runs.iter().enumerate() {
            let mut st: Vec<(&[FuncId], f64)> = run.stacks.iter().map(|(s, v)| (s, *v)).collect();
            st.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (s, v) in st {
                acc.insert(r, s, v);
            }
        }
        let cscale = if opts.candidate_scale > 0.0 && opts.candidate_scale.is_finite() {
            opts.candidate_scale
        } else {
            1.0
        };
        let scale = if cscale == 1.0 {
            Scale::Share
        } else {
            Scale::Rate
        };
        let denom: Vec<f64> = runs
            .iter()
            .enumerate()
            .map(|(r, run)| {
                if r < kb {
                    run.total
                } else {
                    run.total * cscale
                }
            })
            .collect();
        let tb: f64 = denom[..kb].iter().sum();
        let tc: f64 = denom[kb..].iter().sum();
        let tb_share: f64 = runs[..kb].iter().map(|r| r.total).sum();
        let tc_share: f64 = runs[kb..].iter().map(|r| r.total).sum();
        let nn = acc.func.len();
        let obs = |vals: &[f64], id: usize| -> (Vec<Obs>, Vec<Obs>) {
            let o: Vec<Obs> = (0..nruns)
                .map(|r| Obs {
                    value: vals[id * nruns + r],
                    denom: denom[r],
                    weight: runs[r].weight,
                })
                .collect();
            let c = o[kb..].to_vec();
            let mut b = o;
            b.truncate(kb);
            (b, c)
        };
        let sum_side = |vals: &[f64], id: usize, side: std::ops::Range<usize>| -> f64 {
            side.map(|r| vals[id * nruns + r]).sum()
        };
        let samples = |vals: &[f64], id: usize, side: std::ops::Range<usize>| -> f64 {
            side.map(|r| {
                let w = if runs[r].weight > 0.0 {
                    runs[r].weight
                } else {
                    1.0
                };
                vals[id * nruns + r] / w
            })
            .sum()
        };
        // Which nodes are tested, per family (0 = inclusive, 1 = self).
        let model = match scale {
            Scale::Share => CountModel::Share,
            _ => CountModel::Rate,
        };
        let mut tested: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
        let mut items: [Vec<(Vec<RunCount>, Vec<RunCount>)>; 2] = [Vec::new(), Vec::new()];
        for (fam, vals) in [&acc.incl, &acc.selfv].into_iter().enumerate() {
            for id in 0..nn {
                let sb = sum_side(vals, id, 0..kb) / tb_share.max(1e-300);
                let sc = sum_side(vals, id, kb..nruns) / tc_share.max(1e-300);
                if (sb < opts.noise_floor && sc < opts.noise_floor) || (sb == 0.0 && sc == 0.0) {
                    continue;
                }
                tested[fam].push(id);
                let (b, c) = obs(vals, id);
                let (rb, _) = run_counts(&b, &scale);
                let (rc, _) = run_counts(&c, &scale);
                items[fam].push((rb, rc));
            }
        }
        let priors = [
            prior_for(&items[0], model, (kb, nruns - kb)),
            prior_for(&items[1], model, (kb, nruns - kb)),
        ];
        let blank = |vals: &[f64], id: usize| NodeStat {
            baseline: sum_side(vals, id, 0..kb) / tb.max(1e-300),
            candidate: sum_side(vals, id, kb..nruns) / tc.max(1e-300),
            delta: sum_side(vals, id, kb..nruns) / tc.max(1e-300)
                - sum_side(vals, id, 0..kb) / tb.max(1e-300),
            p_value: None,
            q_value: None,
        };
        let mut nodes: Vec<FrameNode> = (0..nn)
            .map(|id| {
                let f = acc.func[id];
                FrameNode {
                    func: f,
                    name: if id == 0 {
                        "all".into()
                    } else {
                        cmp.table.funcs[f as usize].name.clone()
                    },
                    parent: (id != 0).then_some(acc.parent[id]),
                    depth: acc.depth[id],
                    children: Vec::new(),
                    incl: blank(&acc.incl, id),
                    self_value: blank(&acc.selfv, id),
                    base_samples: samples(&acc.incl, id, 0..kb),
                    cand_samples: samples(&acc.incl, id, kb..nruns),
                    base_self_samples: samples(&acc.selfv, id, 0..kb),
                    cand_self_samples: samples(&acc.selfv, id, kb..nruns),
                    change: None,
                    changes: [None, None],
                }
            })
            .collect();
        for (fam, vals) in [&acc.incl, &acc.selfv].into_iter().enumerate() {
            let ps: Vec<f64> = tested[fam]
                .iter()
                .map(|&id| {
                    let (b, c) = obs(vals, id);
                    test_entity_moderated(&b, &c, &scale, 0.95, priors[fam])
                        .p_value
                        .unwrap_or(1.0)
                })
                .collect();
            let qs = stats::benjamini_hochberg(&ps);
            for ((&id, p), q) in tested[fam].iter().zip(ps).zip(qs) {
                let s = if fam == 0 {
                    &mut nodes[id].incl
                } else {
                    &mut nodes[id].self_value
                };
                s.p_value = Some(p);
                s.q_value = Some(q);
            }
        }
        // Children sorted by name (then function id) for a stable layout.
        for id in 1..nn {
            let p = acc.parent[id] as usize;
            nodes[p].children.push(id as u32);
        }
        for id in 0..nn {
            let mut ch = std::mem::take(&mut nodes[id].children);
            ch.sort_by(|&a, &b| {
                let (a, b) = (&nodes[a as usize], &nodes[b as usize]);
                a.name.cmp(&b.name).then(a.func.cmp(&b.func))
            });
            nodes[id].children = ch;
        }
        // Colour: significant changes, graded against the largest, for
        // both metrics (the page can switch).
        let mut max_changes = [0.0f64; 2];
        for by in [ColorBy::Inclusive, ColorBy::SelfValue] {
            let sig = |n: &FrameNode| {
                let s = n.colored(by);
                matches!(s.q_value, Some(q) if q < opts.alpha) && s.delta != 0.0
            };
            let max = nodes
                .iter()
                .filter(|n| sig(n))
                .map(|n| n.colored(by).delta.abs())
                .fold(0.0f64, f64::max);
            for n in &mut nodes {
                if sig(n) {
                    n.changes[by as usize] = Some(n.colored(by).delta / max.max(1e-300));
                }
            }
            max_changes[by as usize] = max;
        }
        for n in &mut nodes {
            n.change = n.changes[opts.color_by as usize];
        }
        FrameTree {
            nodes,
            color_by: opts.color_by,
            alpha: opts.alpha,
            noise_floor: opts.noise_floor,
            candidate_scale: cscale,
            tested: tested[opts.color_by as usize].len(),
            max_change: max_changes[opts.color_by as usize],
            tested_by: [tested[0].len(), tested[1].len()],
            max_changes,
            truncated_stacks: acc.truncated,
            runs: (kb, nruns - kb),
            sample_type: cmp.sample_type.to_string(),
        }
    }

    /// What values are fractions of, for legends.
    pub fn unit_text(&self) -> &'static str {
        if self.candidate_scale == 1.0 {
            "share of each side's total"
        } else {
            "% of the baseline's total (compositional scale)"
        }
    }

    /// One-line legend for the coloured metric: what red, blue and grey mean.
    pub fn legend(&self) -> String {
        self.legend_for(self.color_by)
    }

    /// One-line legend when colouring by `by`.
    pub fn legend_for(&self, by: ColorBy) -> String {
        let max = self.max_changes[by as usize];
        let darkest = if max > 0.0 {
            format!("darkest = {:.1} points", max * 100.0)
        } else {
            "no frame changed significantly".into()
        };
        format!(
            "colour = significant change of the frame's {} value (BH q < {} over {} frames): red = grew, blue = shrank, \
             darker = larger ({darkest}); grey = no significant change (noise); light grey = under the {}% noise floor, not tested",
            by.as_str(),
            self.alpha,
            self.tested_by[by as usize],
            self.noise_floor * 100.0
        )
    }

    /// The legend in one short line (the SVG's subtitle).
    pub fn short_legend(&self, base_width: bool) -> String {
        let darkest = if self.max_change > 0.0 {
            format!("max {:.1} pt", self.max_change * 100.0)
        } else {
            "none significant".into()
        };
        format!(
            "width = {}; colour = significant {} change (q < {}): red = grew, blue = shrank, darker = larger ({darkest}), grey = noise",
            if base_width { "baseline" } else { "candidate" },
            self.color_by.as_str(),
            self.alpha,
        )
    }

    /// Tooltip text of a node: name first, then its statistics, with no
    /// parenthesis inside the statistics (inferno's script cuts the label
    /// at the last parenthesised group).
    pub fn tooltip(&self, id: usize, base_width: bool) -> String {
        let n = &self.nodes[id];
        let stat = |s: &NodeStat| {
            let q = match s.q_value {
                Some(q) if q < 1e-3 => format!(", q={q:.1e}"),
                Some(q) => format!(", q={q:.3}"),
                None => ", not tested".into(),
            };
            format!(
                "{:.2}% → {:.2}%, {:+.2} pt{q}",
                s.baseline * 100.0,
                s.candidate * 100.0,
                s.delta * 100.0
            )
        };
        let (samples, side) = if base_width {
            (n.base_samples, "baseline")
        } else {
            (n.cand_samples, "candidate")
        };
        format!(
            "{} ({samples:.0} {side} samples | inclusive {} | self {})",
            n.name,
            stat(&n.incl),
            stat(&n.self_value)
        )
    }
}

/// The [`DiffGraphOptions::candidate_scale`] matching a comparison's scale:
/// the candidate's size factor ([`Comparison::size`]) under
/// [`Scale::Compositional`], else 1 (plain shares).
pub fn candidate_scale(cmp: &Comparison, scale: Option<&Scale>) -> f64 {
    match scale {
        Some(Scale::Compositional) if cmp.size.factor > 0.0 => cmp.size.factor,
        _ => 1.0,
    }
}

fn frame_name(s: &str) -> String {
    s.replace(';', ":")
}

/// Render the differential flame graph of `cmp` as SVG into `out`.
pub fn render(cmp: &Comparison, opts: &DiffGraphOptions, out: impl Write) -> io::Result<()> {
    let tree = FrameTree::build(cmp, opts);
    render_tree(&tree, opts, out)
}

/// Render an already built tree as SVG (width from the candidate, or the
/// baseline with [`DiffGraphOptions::base_width`]).
pub fn render_tree(tree: &FrameTree, opts: &DiffGraphOptions, out: impl Write) -> io::Result<()> {
    // One folded line per node with self samples, with the node path
    // behind it; inferno needs the lines sorted as strings.
    let mut lines: Vec<(String, Vec<usize>, u64)> = Vec::new();
    let mut path: Vec<usize> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut stack: Vec<(usize, bool)> = vec![(0, true)];
    while let Some((id, enter)) = stack.pop() {
        let n = &tree.nodes[id];
        if !enter {
            path.pop();
            names.pop();
            continue;
        }
        if id != 0 {
            path.push(id);
            names.push(frame_name(&n.name));
            stack.push((id, false));
        }
        let selfc = if opts.base_width {
            n.base_self_samples
        } else {
            n.cand_self_samples
        }
        .round() as u64;
        if selfc > 0 && id != 0 {
            lines.push((format!("{} {selfc}", names.join(";")), path.clone(), selfc));
        }
        for &c in n.children.iter().rev() {
            stack.push((c as usize, true));
        }
    }
    lines.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    // Replay inferno's merge of consecutive lines (frames are merged while
    // the names agree): each frame's (depth, x offset) -> our node.
    let mut at: HashMap<(u32, u64), usize> = HashMap::new();
    at.insert((0, 0), 0);
    let mut x = 0u64;
    let mut prev: &[usize] = &[];
    for (_, p, c) in &lines {
        let same = p
            .iter()
            .zip(prev)
            .take_while(|(a, b)| tree.nodes[**a].name == tree.nodes[**b].name)
            .count();
        for (d, &id) in p.iter().enumerate().skip(same) {
            at.entry((d as u32 + 1, x)).or_insert(id);
        }
        x += c;
        prev = p;
    }
    let mut lines: Vec<String> = lines.into_iter().map(|l| l.0).collect();
    let mut o = Options::default();
    o.title = opts.title.clone();
    o.subtitle = Some(tree.short_legend(opts.base_width));
    o.count_name = "samples".into();
    o.deterministic = true;
    o.text_truncate_direction = TextTruncateDirection::Left;
    let frame_height = o.frame_height;
    let mut svg = Vec::new();
    if lines.is_empty() {
        lines.push("[no samples] 1".into());
    }
    flamegraph::from_lines(&mut o, lines.iter().map(String::as_str), &mut svg)
        .map_err(io::Error::other)?;
    let svg = String::from_utf8_lossy(&svg);
    rewrite_frames(&svg, tree, &at, frame_height, opts.base_width, out)
}

/// Attribute value `name="..."` inside `tag`.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let i = tag.find(&key)? + key.len();
    let j = tag[i..].find('"')?;
    Some(&tag[i..i + j])
}

/// Give every frame its node's tooltip and colour.
fn rewrite_frames(
    svg: &str,
    tree: &FrameTree,
    at: &HashMap<(u32, u64), usize>,
    frame_height: usize,
    base_width: bool,
    mut out: impl Write,
) -> io::Result<()> {
    // The root frame ("all") is the lowest one: its y gives depth 0.
    let frames: Vec<(usize, usize)> = {
        let mut v = Vec::new();
        let mut from = 0;
        while let Some(i) = svg[from..].find("<g><title>") {
            let s = from + i;
            let e = svg[s..]
                .find("</g>")
                .map(|e| s + e + 4)
                .unwrap_or(svg.len());
            v.push((s, e));
            from = e;
        }
        v
    };
    let y_of = |g: &str| -> Option<f64> {
        let r = &g[g.find("<rect")?..];
        attr(r, "y")?.parse().ok()
    };
    let y_root = frames
        .iter()
        .filter_map(|&(s, e)| y_of(&svg[s..e]))
        .fold(f64::MIN, f64::max);
    let mut last = 0;
    for &(s, e) in &frames {
        out.write_all(&svg.as_bytes()[last..s])?;
        last = e;
        let g = &svg[s..e];
        let node = (|| {
            let r = &g[g.find("<rect")?..];
            let x: u64 = attr(r, "fg:x")?.parse().ok()?;
            let y: f64 = attr(r, "y")?.parse().ok()?;
            let depth = ((y_root - y) / frame_height as f64).round() as u32;
            at.get(&(depth, x)).copied()
        })();
        let Some(id) = node else {
            out.write_all(g.as_bytes())?;
            continue;
        };
        let t0 = g.find("<title>").unwrap_or(0) + "<title>".len();
        let t1 = g.find("</title>").unwrap_or(t0);
        out.write_all(&g.as_bytes()[..t0])?;
        out.write_all(crate::report::xml_escape_pub(&tree.tooltip(id, base_width)).as_bytes())?;
        let rest = &g[t1..];
        let c = tree.nodes[id].color(tree.color_by);
        match rest.find(" fill=\"") {
            Some(f) => {
                let v0 = f + " fill=\"".len();
                let v1 = rest[v0..].find('"').map(|k| v0 + k).unwrap_or(v0);
                out.write_all(&rest.as_bytes()[..v0])?;
                write!(out, "rgb({},{},{})", c.r, c.g, c.b)?;
                out.write_all(&rest.as_bytes()[v1..])?;
            }
            None => out.write_all(rest.as_bytes())?,
        }
    }
    out.write_all(&svg.as_bytes()[last..])
}
