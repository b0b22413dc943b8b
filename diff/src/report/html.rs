//! One self-contained HTML page: verdict, culprits, an interactive
//! differential flame graph (our own small renderer, `html/flame.js`, fed
//! by the merged frame tree as embedded JSON), findings, rules, top changes,
//! normalization and scale. No network access, no external scripts or fonts.

use std::fmt::Write;

use serde::Serialize;

use super::{fmt_delta, fmt_p, fmt_value, headline, needed_text, xml_escape};
use crate::diffgraph::{ColorBy, FrameTree};
use crate::gate::{Culprit, CulpritKind, GateReport, Verdict};

const SCRIPT: &str = include_str!("html/flame.js");
const STYLE: &str = include_str!("html/page.css");

/// Most frames embedded in the page; the narrowest are left out beyond it
/// (the page says how many).
pub const MAX_PAGE_FRAMES: usize = 20_000;

fn class(v: Verdict) -> &'static str {
    v.as_str()
}

/// One frame for the page: name index, parent (-1 root), baseline and
/// candidate inclusive, baseline and candidate self, inclusive and self
/// q-values (-1 untested), fill index by inclusive change, candidate and
/// baseline samples, fill index by self change.
type PageFrame = (u32, i64, f64, f64, f64, f64, f64, f64, u32, f64, f64, u32);

/// The frame tree as the page's script reads it.
#[derive(Serialize)]
struct PageData<'a> {
    color_by: &'static str,
    legend: String,
    legend_self: String,
    unit: &'static str,
    max_change: f64,
    omitted: usize,
    /// Per frame: [name index, parent (-1 root), base incl, cand incl,
    /// base self, cand self, incl q (-1 untested), self q, fill index,
    /// cand samples, base samples].
    frames: Vec<PageFrame>,
    names: Vec<&'a str>,
    fills: Vec<String>,
    culprits: Vec<PageCulprit>,
}

#[derive(Serialize)]
struct PageCulprit {
    label: String,
    /// Page frame ids to highlight; the first is the primary one.
    frames: Vec<usize>,
}

/// Frames of the tree (by tree node id) that show a culprit: for a frame
/// culprit every node of its function, the one best matching the culprit's
/// path (then the widest) first; for a new edge every callee node whose
/// parent is the caller.
pub fn culprit_nodes(tree: &FrameTree, c: &Culprit) -> Vec<usize> {
    let path: Vec<&str> = c.path.iter().map(|p| p.function.as_str()).collect();
    let mut hits: Vec<(usize, usize, f64)> = Vec::new(); // (node, path match, width)
    for (id, n) in tree.nodes.iter().enumerate().skip(1) {
        let ok = match &c.kind {
            CulpritKind::Frame => n.name == c.function,
            CulpritKind::NewEdge { caller, callee } => {
                &n.name == callee
                    && n.parent
                        .is_some_and(|p| &tree.nodes[p as usize].name == caller)
            }
        };
        if !ok {
            continue;
        }
        // How much of the path (root first) appears, in order, among the ancestors.
        let mut anc = Vec::new();
        let mut p = Some(id as u32);
        while let Some(x) = p {
            anc.push(tree.nodes[x as usize].name.as_str());
            p = tree.nodes[x as usize].parent;
        }
        anc.reverse();
        let mut k = 0;
        for a in &anc {
            if k < path.len() && *a == path[k] {
                k += 1;
            }
        }
        hits.push((id, k, n.incl.candidate.max(n.incl.baseline)));
    }
    hits.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.total_cmp(&a.2)).then(a.0.cmp(&b.0)));
    hits.into_iter().map(|h| h.0).collect()
}

fn page_data<'a>(tree: &'a FrameTree, culprits: &[Culprit]) -> PageData<'a> {
    // Keep the widest frames (inclusive values shrink along every path, so
    // the kept set contains every kept frame's ancestors).
    let width = |i: usize| {
        let n = &tree.nodes[i];
        n.incl.baseline.max(n.incl.candidate)
    };
    let mut order: Vec<usize> = (0..tree.nodes.len()).collect();
    let mut keep = vec![true; tree.nodes.len()];
    if order.len() > MAX_PAGE_FRAMES {
        order.sort_by(|&a, &b| width(b).total_cmp(&width(a)).then(a.cmp(&b)));
        for &i in &order[MAX_PAGE_FRAMES..] {
            keep[i] = false;
        }
        // Ties at the cut: keep ancestors of kept frames.
        for i in 0..tree.nodes.len() {
            if keep[i] {
                let mut p = tree.nodes[i].parent;
                while let Some(x) = p {
                    keep[x as usize] = true;
                    p = tree.nodes[x as usize].parent;
                }
            }
        }
    }
    let mut page_id = vec![usize::MAX; tree.nodes.len()];
    let mut names: Vec<&str> = Vec::new();
    let mut name_ix: std::collections::HashMap<&str, u32> = Default::default();
    let mut fills: Vec<String> = Vec::new();
    let mut fill_ix: std::collections::HashMap<String, u32> = Default::default();
    let mut frames = Vec::new();
    // Depth-first, children in the tree's order: the page lays frames out
    // in this order.
    let mut stack = vec![0usize];
    while let Some(i) = stack.pop() {
        if !keep[i] {
            continue;
        }
        let n = &tree.nodes[i];
        page_id[i] = frames.len();
        let ni = *name_ix.entry(n.name.as_str()).or_insert_with(|| {
            names.push(n.name.as_str());
            (names.len() - 1) as u32
        });
        let mut fill = |by: ColorBy| -> u32 {
            let c = n.color(by);
            let hex = format!("#{:02x}{:02x}{:02x}", c.r, c.g, c.b);
            match fill_ix.get(&hex) {
                Some(&f) => f,
                None => {
                    fills.push(hex.clone());
                    fill_ix.insert(hex, (fills.len() - 1) as u32);
                    (fills.len() - 1) as u32
                }
            }
        };
        let (fi, fs) = (fill(ColorBy::Inclusive), fill(ColorBy::SelfValue));
        let parent = n.parent.map(|p| page_id[p as usize] as i64).unwrap_or(-1);
        frames.push((
            ni,
            parent,
            n.incl.baseline,
            n.incl.candidate,
            n.self_value.baseline,
            n.self_value.candidate,
            n.incl.q_value.unwrap_or(-1.0),
            n.self_value.q_value.unwrap_or(-1.0),
            fi,
            n.cand_samples.round(),
            n.base_samples.round(),
            fs,
        ));
        for &ch in n.children.iter().rev() {
            stack.push(ch as usize);
        }
    }
    let culprits = culprits
        .iter()
        .map(|c| PageCulprit {
            label: c.function.clone(),
            frames: culprit_nodes(tree, c)
                .into_iter()
                .filter(|&i| keep[i])
                .map(|i| page_id[i])
                .collect(),
        })
        .collect();
    PageData {
        color_by: tree.color_by.as_str(),
        legend: tree.legend_for(ColorBy::Inclusive),
        legend_self: tree.legend_for(ColorBy::SelfValue),
        unit: tree.unit_text(),
        max_change: tree.max_change,
        omitted: keep.iter().filter(|k| !**k).count(),
        frames,
        names,
        fills,
        culprits,
    }
}

/// JSON safe inside a `<script>` element.
fn script_json(v: &impl Serialize) -> String {
    serde_json::to_string(v)
        .unwrap_or_else(|_| "null".into())
        .replace("</", "<\\/")
        .replace("<!--", "<\\!--")
}

fn fmt_pt(x: f64, unit: &str) -> String {
    if unit == "%" {
        format!("{:+.1} pt", x * 100.0)
    } else {
        format!("{:+} {unit}", crate::gate::fmt_num(x))
    }
}

fn culprits_html(o: &mut String, r: &GateReport) {
    if r.culprits.is_empty() {
        return;
    }
    let _ = writeln!(o, "<section id=\"culprits\"><h2>Culprits</h2>");
    for (ci, c) in r.culprits.iter().enumerate() {
        let what = match &c.kind {
            CulpritKind::Frame => format!("<code>{}</code>", xml_escape(&c.function)),
            CulpritKind::NewEdge { caller, callee } => format!(
                "new call <code>{}</code> → <code>{}</code>",
                xml_escape(caller),
                xml_escape(callee)
            ),
        };
        let _ = writeln!(
            o,
            "<div class=\"culprit-card\"><div><span class=\"badge {}\">{}</span> {what} <b class=\"up\">{}</b> inclusive ({} → {}), q = {}</div>",
            class(c.verdict),
            c.verdict.as_str(),
            xml_escape(&fmt_pt(c.delta, &c.unit)),
            xml_escape(&fmt_value(c.baseline, &c.unit)),
            xml_escape(&fmt_value(c.candidate, &c.unit)),
            fmt_p(c.q_value)
        );
        if !c.message.is_empty() {
            let _ = writeln!(o, "<div class=\"msg\">{}</div>", xml_escape(&c.message));
        }
        if !c.path.is_empty() {
            let _ = write!(o, "<ol class=\"path\" data-culprit=\"{ci}\">");
            for (i, s) in c.path.iter().enumerate() {
                let cls = if s.delta > 0.0 {
                    "up"
                } else if s.delta < 0.0 {
                    "down"
                } else {
                    ""
                };
                let _ = write!(
                    o,
                    "<li data-step=\"{i}\"><code>{}</code> <span class=\"{cls}\">{}</span></li>",
                    xml_escape(&s.function),
                    xml_escape(&fmt_pt(s.delta, &c.unit))
                );
            }
            let _ = writeln!(o, "</ol>");
        }
        if !c.explained_by.is_empty() {
            let parts: Vec<String> = c
                .explained_by
                .iter()
                .map(|s| {
                    format!(
                        "<code>{}</code> {}",
                        xml_escape(&s.function),
                        xml_escape(&fmt_pt(s.delta, &c.unit))
                    )
                })
                .collect();
            let _ = writeln!(o, "<div class=\"msg\">of which: {}</div>", parts.join(", "));
        }
        let _ = writeln!(o, "</div>");
    }
    let _ = writeln!(o, "</section>");
}

/// Render the report as one self-contained HTML page, with the interactive
/// differential flame graph of `tree` when given.
pub fn html(r: &GateReport, tree: Option<&FrameTree>) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>profdiff: {}</title><style>{STYLE}</style></head><body>",
        xml_escape(&headline(r))
    );
    let _ = writeln!(
        o,
        "<header><h1 class=\"{}\">profdiff: {}</h1><p class=\"sub\">scale: <b>{}</b> · normalization: {} · significance: BH q &lt; {} (inconclusive &lt; {}) · noise floor {}%</p></header>",
        class(r.verdict),
        xml_escape(&headline(r)),
        xml_escape(if r.scale.is_empty() { "share" } else { &r.scale }),
        xml_escape(&r.normalization.join(", ")),
        r.alpha,
        r.inconclusive_alpha,
        r.noise_floor * 100.0
    );
    culprits_html(&mut o, r);
    if let Some(tree) = tree {
        let data = page_data(tree, &r.culprits);
        let _ = writeln!(
            o,
            "<section id=\"graph\"><h2>Differential flame graph</h2>\
             <div class=\"toolbar\">\
             <span class=\"views\">width: \
             <label><input type=\"radio\" name=\"view\" value=\"cand\" checked> candidate</label>\
             <label><input type=\"radio\" name=\"view\" value=\"base\"> baseline</label>\
             <label><input type=\"radio\" name=\"view\" value=\"diff\"> diff (both sides)</label></span>\
             <span class=\"views\">colour: \
             <label><input type=\"radio\" name=\"color\" value=\"inclusive\"{}> inclusive change</label>\
             <label><input type=\"radio\" name=\"color\" value=\"self\"{}> self change</label></span>\
             <input id=\"search\" type=\"search\" placeholder=\"search functions (regex)\" aria-label=\"search\">\
             <span id=\"matched\"></span>\
             <button id=\"reset\" type=\"button\">reset zoom</button></div>\
             <div class=\"legend\"><span class=\"sw\" style=\"background:#d72626\"></span><span class=\"sw\" style=\"background:#f08a7f\"></span> grew \
             <span class=\"sw\" style=\"background:#2850d7\"></span><span class=\"sw\" style=\"background:#8ea6f0\"></span> shrank \
             <span class=\"sw\" style=\"background:#dddddd\"></span> no significant change \
             <span class=\"sw\" style=\"background:#ececec\"></span> not tested \
             <span class=\"sw culprit-sw\"></span> culprit<br><small id=\"legend-text\">{}</small></div>\
             <div id=\"flame\" role=\"img\" aria-label=\"differential flame graph\"></div>\
             <div id=\"details\">hover a frame for details; click to zoom</div>\
             <div id=\"tip\" hidden></div>",
            if tree.color_by == ColorBy::Inclusive { " checked" } else { "" },
            if tree.color_by == ColorBy::SelfValue { " checked" } else { "" },
            xml_escape(&format!("{}. Values: {}.", tree.legend(), data.unit))
        );
        if data.omitted > 0 || tree.truncated_stacks > 0 {
            let _ = writeln!(
                o,
                "<p class=\"note\">{} narrow frames left out of the page (limit {MAX_PAGE_FRAMES}); {} stacks cut short at the tree limit.</p>",
                data.omitted, tree.truncated_stacks
            );
        }
        let _ = writeln!(
            o,
            "<script type=\"application/json\" id=\"pd-data\">{}</script></section>",
            script_json(&data)
        );
    }
    let _ = writeln!(o, "<section><h2>Findings</h2>");
    if r.findings.is_empty() {
        let _ = writeln!(o, "<p>No rule was breached.</p>");
    } else {
        let _ = writeln!(o, "<table><tr><th>verdict</th><th>rule</th><th>function</th><th>metric</th><th>baseline</th><th>candidate</th><th>delta</th><th>p</th><th>q</th><th>note</th></tr>");
        for f in &r.findings {
            let note = [needed_text(f), f.allowed.clone()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("; ");
            let metric = match f.metric {
                Some(crate::budgets::MetricKind::Flat) => "self",
                Some(crate::budgets::MetricKind::Cum) => "inclusive",
                None => "",
            };
            let _ = writeln!(o, "<tr><td class=\"{}\">{}{}</td><td>{}</td><td><code>{}</code></td><td>{metric}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td>{}</td></tr>",
                class(f.verdict), f.verdict.as_str(), if f.severity == crate::budgets::Severity::Warn { " (warn)" } else { "" },
                xml_escape(&f.rule), xml_escape(&f.function), xml_escape(&fmt_value(f.baseline, &f.unit)), xml_escape(&fmt_value(f.candidate, &f.unit)),
                xml_escape(&fmt_delta(f)), fmt_p(f.p_value), fmt_p(f.q_value), xml_escape(&note));
        }
        let _ = writeln!(o, "</table>");
    }
    let _ = writeln!(o, "</section><section><h2>Rules</h2><table><tr><th>rule</th><th>verdict</th><th>tested</th><th>limit</th></tr>");
    for rule in &r.rules {
        let v = if rule.applicable {
            rule.verdict.as_str().to_string()
        } else {
            format!("n/a: {}", rule.note.as_deref().unwrap_or(""))
        };
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td class=\"{}\">{}</td><td class=n>{}</td><td>{}</td></tr>",
            xml_escape(&rule.name),
            class(rule.verdict),
            xml_escape(&v),
            rule.tested,
            xml_escape(&rule.description)
        );
    }
    let _ = writeln!(o, "</table></section>");
    if !r.top.is_empty() {
        let _ = writeln!(o, "<section><h2>Top changes</h2><table><tr><th>function</th><th>self base</th><th>self cand</th><th>delta</th><th>q</th><th>inclusive base</th><th>inclusive cand</th><th>delta</th><th>q</th></tr>");
        for d in &r.top {
            let _ = writeln!(o, "<tr><td><code>{}</code></td><td class=n>{:.2}%</td><td class=n>{:.2}%</td><td class=n>{:+.2} pt</td><td class=n>{}</td><td class=n>{:.2}%</td><td class=n>{:.2}%</td><td class=n>{:+.2} pt</td><td class=n>{}</td></tr>",
                xml_escape(&d.function), d.flat.baseline * 100.0, d.flat.candidate * 100.0, d.flat.delta * 100.0, fmt_p(d.flat.q_value),
                d.cum.baseline * 100.0, d.cum.candidate * 100.0, d.cum.delta * 100.0, fmt_p(d.cum.q_value));
        }
        let _ = writeln!(o, "</table></section>");
    }
    let _ = writeln!(
        o,
        "<section><h2>Inputs, normalization and scale</h2><p>scale: <b>{}</b></p><p>normalization: {}</p><p>baseline ({}): {}</p><p>candidate ({}): {}</p></section>",
        xml_escape(if r.scale.is_empty() { "share" } else { &r.scale }),
        xml_escape(&r.normalization.join(", ")),
        r.baseline.len(),
        xml_escape(&r.baseline.join(", ")),
        r.candidate.len(),
        xml_escape(&r.candidate.join(", "))
    );
    if tree.is_some() {
        let _ = writeln!(o, "<script>{SCRIPT}</script>");
    }
    let _ = writeln!(o, "</body></html>");
    o
}
