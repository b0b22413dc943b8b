//! Gate reports: terminal table, JSON, Markdown (PR comment), JUnit XML and
//! a self-contained HTML page. All of them list the normalization applied.
//!
//! Every renderer is a pure function of a [`GateReport`], so output is
//! deterministic for reference tests.

mod html;
mod json;
mod junit;
mod markdown;
mod terminal;

pub use html::html;
pub use json::{json, JSON_SCHEMA};
pub use junit::junit;
pub use markdown::markdown;
pub use terminal::terminal;

use crate::gate::{Culprit, CulpritKind, Finding, GateReport, PathStep};

/// Format a value in a display unit (`%` values are fractions of the total).
pub fn format_value(v: f64, unit: &str) -> String {
    fmt_value(v, unit)
}

/// Format a value in a finding's unit (`%` values are fractions).
pub(crate) fn fmt_value(v: f64, unit: &str) -> String {
    if unit == "%" {
        format!("{:.2}%", v * 100.0)
    } else {
        format!("{} {unit}", crate::gate::fmt_num(v))
    }
}

/// Format a delta in a finding's unit.
pub(crate) fn fmt_delta(f: &Finding) -> String {
    let d = if f.unit == "%" {
        format!("{:+.2}pt", f.delta * 100.0)
    } else {
        format!("{:+} {}", crate::gate::fmt_num(f.delta), f.unit)
    };
    match f.relative {
        Some(r) => format!("{d} ({:+.1}%)", r * 100.0),
        None if f.delta != 0.0 => format!("{d} (new)"),
        None => d,
    }
}

/// Format a p-value.
pub(crate) fn fmt_p(p: Option<f64>) -> String {
    match p {
        Some(p) if p < 1e-4 => format!("{p:.1e}"),
        Some(p) => format!("{p:.4}"),
        None => "-".into(),
    }
}

/// What to say about an inconclusive finding.
pub(crate) fn needed_text(f: &Finding) -> Option<String> {
    match (f.runs_needed, f.samples_needed) {
        (Some(r), Some(s)) => Some(format!("≈{s:.0} samples (≈{r} runs) per side to decide")),
        (Some(r), None) => Some(format!("≈{r} runs per side to decide")),
        _ => None,
    }
}

/// Escape text for XML/HTML.
pub(crate) fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Escape text for XML/HTML (for other modules of this crate).
pub(crate) fn xml_escape_pub(s: &str) -> String {
    xml_escape(s)
}

/// Summary line shared by the renderers.
pub(crate) fn headline(r: &GateReport) -> String {
    format!(
        "{} — {} ({} baseline vs {} candidate profile(s))",
        r.verdict.as_str().to_uppercase(),
        r.sample_type,
        r.baseline.len(),
        r.candidate.len()
    )
}

/// A delta in points (`%` units) or in the unit, signed.
pub(crate) fn fmt_points(v: f64, unit: &str) -> String {
    if unit == "%" {
        format!("{:+.1} pt", v * 100.0)
    } else {
        format!("{:+} {unit}", crate::gate::fmt_num(v))
    }
}

/// What the values of a report are: the unit line shared by the renderers.
pub(crate) fn scale_note(r: &GateReport) -> &'static str {
    if r.scale.starts_with("compositional") {
        "% of the baseline's total per unit of work"
    } else {
        "% of each side's total"
    }
}

/// One line naming a culprit: kind, function and how much it grew.
pub(crate) fn culprit_title(c: &Culprit) -> String {
    match &c.kind {
        CulpritKind::Frame => format!(
            "{} {} cum{} ({} -> {})",
            c.function,
            fmt_points(c.delta, &c.unit),
            if c.outside_earlier {
                crate::gate::OUTSIDE_EARLIER
            } else {
                ""
            },
            fmt_value(c.baseline, &c.unit),
            fmt_value(c.candidate, &c.unit)
        ),
        CulpritKind::NewEdge { caller, callee } => format!(
            "new call {caller} -> {callee}: {} ({} -> {})",
            fmt_points(c.delta, &c.unit),
            fmt_value(c.baseline, &c.unit),
            fmt_value(c.candidate, &c.unit)
        ),
    }
}

/// "of which X +47 pt, Y +3 pt".
pub(crate) fn of_which(steps: &[PathStep], unit: &str) -> Option<String> {
    if steps.is_empty() {
        return None;
    }
    Some(format!(
        "of which {}",
        steps
            .iter()
            .map(|s| format!("{} {}", s.function, fmt_points(s.delta, unit)))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}
