//! Markdown for a pull-request comment: verdict, top regressions first,
//! rules, normalization.

use std::fmt::Write;

use super::{
    culprit_title, fmt_delta, fmt_p, fmt_points, fmt_value, headline, needed_text, of_which,
    scale_note,
};
use crate::gate::{GateReport, Verdict};

fn icon(v: Verdict) -> &'static str {
    match v {
        Verdict::Fail => "❌",
        Verdict::Inconclusive => "⚠️",
        Verdict::Improved => "🚀",
        Verdict::Pass => "✅",
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// Render the report as Markdown.
pub fn markdown(r: &GateReport) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "## {} profdiff: {}\n", icon(r.verdict), headline(r));
    if !r.culprits.is_empty() {
        let _ = writeln!(o, "**Culprits** (inclusive values, {}):\n", scale_note(r));
        for (i, c) in r.culprits.iter().enumerate() {
            let _ = writeln!(
                o,
                "{}. {} `{}` (q={}){}",
                i + 1,
                if c.allowed.is_some() {
                    "☑️"
                } else {
                    icon(c.verdict)
                },
                cell(&culprit_title(c)),
                fmt_p(c.q_value),
                c.allowed
                    .as_ref()
                    .map(|a| format!(" — allowed: {}", cell(a)))
                    .unwrap_or_default()
            );
            if i > 0 && c.follows_its_frame(&r.culprits[i - 1]) {
                continue;
            }
            let _ = writeln!(o, "   ```");
            let last = c.path.len().saturating_sub(1);
            for (d, st) in c.path.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "   {}{}{}  {} -> {} ({}){}",
                    "  ".repeat(d),
                    if d == 0 { "" } else { "└ " },
                    st.function,
                    fmt_value(st.baseline, &c.unit),
                    fmt_value(st.candidate, &c.unit),
                    fmt_points(st.delta, &c.unit),
                    if d == last { "  ← culprit" } else { "" }
                );
            }
            if let Some(w) = of_which(&c.explained_by, &c.unit) {
                let _ = writeln!(o, "   {w}");
            }
            let _ = writeln!(o, "   ```");
        }
        let _ = writeln!(o);
    }
    if r.findings.is_empty() {
        let _ = writeln!(o, "No rule was breached.\n");
    } else {
        let _ = writeln!(
            o,
            "| | rule | function | baseline | candidate | delta | p | q |"
        );
        let _ = writeln!(o, "|---|---|---|---:|---:|---:|---:|---:|");
        for f in &r.findings {
            let mut v = format!("{} {}", icon(f.verdict), f.verdict.as_str());
            if f.severity == crate::budgets::Severity::Warn {
                v.push_str(" (warn)");
            }
            if f.allowed.is_some() {
                v = "☑️ allowed".into();
            }
            let mut func = format!("`{}`", cell(&f.function));
            if let Some(n) = needed_text(f) {
                func.push_str(&format!("<br>{n}"));
            }
            if let Some(a) = &f.allowed {
                func.push_str(&format!("<br>{}", cell(a)));
            }
            let _ = writeln!(
                o,
                "| {v} | {} | {func} | {} | {} | {} | {} | {} |",
                cell(&f.rule),
                fmt_value(f.baseline, &f.unit),
                fmt_value(f.candidate, &f.unit),
                fmt_delta(f),
                fmt_p(f.p_value),
                fmt_p(f.q_value)
            );
        }
        let _ = writeln!(o);
    }
    let _ = writeln!(o, "<details><summary>Rules ({})</summary>\n", r.rules.len());
    let _ = writeln!(o, "| rule | verdict | tested | limit |");
    let _ = writeln!(o, "|---|---|---:|---|");
    for rule in &r.rules {
        let v = if rule.applicable {
            format!("{} {}", icon(rule.verdict), rule.verdict.as_str())
        } else {
            format!("n/a: {}", cell(rule.note.as_deref().unwrap_or("")))
        };
        let _ = writeln!(
            o,
            "| {} | {v} | {} | {} |",
            cell(&rule.name),
            rule.tested,
            cell(&rule.description)
        );
    }
    let _ = writeln!(o, "\n</details>\n");
    if !r.top.is_empty() {
        let _ = writeln!(
            o,
            "<details><summary>Top changes (flat, {})</summary>\n",
            scale_note(r)
        );
        let _ = writeln!(
            o,
            "| function | flat base | flat cand | delta | cum base | cum cand | q |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|");
        for d in &r.top {
            let _ = writeln!(
                o,
                "| `{}` | {:.2}% | {:.2}% | {:+.2}pt | {:.2}% | {:.2}% | {} |",
                cell(&d.function),
                d.flat.baseline * 100.0,
                d.flat.candidate * 100.0,
                d.flat.delta * 100.0,
                d.cum.baseline * 100.0,
                d.cum.candidate * 100.0,
                fmt_p(d.flat.q_value)
            );
        }
        let _ = writeln!(o, "\n</details>\n");
    }
    let _ = writeln!(o, "Scale: {}.\n", r.scale);
    let _ = writeln!(
        o,
        "Normalization: {}. Significance: BH q < {} (inconclusive < {}); noise floor {}%.",
        r.normalization
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", "),
        r.alpha,
        r.inconclusive_alpha,
        r.noise_floor * 100.0
    );
    o
}
