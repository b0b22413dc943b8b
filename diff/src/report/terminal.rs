//! Plain-text table for terminals (colour optional).

use std::fmt::Write;

use super::{
    culprit_title, fmt_delta, fmt_p, fmt_points, fmt_value, headline, needed_text, of_which,
    scale_note,
};
use crate::gate::{GateReport, Verdict};

fn paint(s: &str, v: Verdict, color: bool) -> String {
    if !color {
        return s.to_string();
    }
    let code = match v {
        Verdict::Fail => "1;31",
        Verdict::Inconclusive => "1;33",
        Verdict::Improved => "1;32",
        Verdict::Pass => "32",
    };
    format!("\x1b[{code}m{s}\x1b[0m")
}

fn trunc(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let tail: String = s
            .chars()
            .rev()
            .take(n - 1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("…{tail}")
    }
}

/// Render the report as a terminal table. `color` adds ANSI colours (the
/// caller decides: only when stdout is a terminal and `NO_COLOR` is unset).
pub fn terminal(r: &GateReport, color: bool) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "profdiff: {}", paint(&headline(r), r.verdict, color));
    let _ = writeln!(o, "scale: {}", r.scale);
    let _ = writeln!(o, "normalization: {}", r.normalization.join(", "));
    let _ = writeln!(
        o,
        "significance: BH-adjusted q < {} (inconclusive below {}), noise floor {}% share",
        r.alpha,
        r.inconclusive_alpha,
        r.noise_floor * 100.0
    );
    if !r.culprits.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(o, "culprits (inclusive values, {}):", scale_note(r));
        for (i, c) in r.culprits.iter().enumerate() {
            let v = if c.allowed.is_some() {
                "allowed"
            } else {
                c.verdict.as_str()
            };
            let _ = writeln!(
                o,
                "{}. {}  {}  q={}{}",
                i + 1,
                culprit_title(c),
                paint(v, c.verdict, color && c.allowed.is_none()),
                fmt_p(c.q_value),
                c.allowed
                    .as_ref()
                    .map(|a| format!(" ({a})"))
                    .unwrap_or_default()
            );
            if i > 0 && c.follows_its_frame(&r.culprits[i - 1]) {
                continue;
            }
            let last = c.path.len().saturating_sub(1);
            for (d, st) in c.path.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "   {:>10}  {:>9} -> {:<9} {}{}{}{}",
                    fmt_points(st.delta, &c.unit),
                    fmt_value(st.baseline, &c.unit),
                    fmt_value(st.candidate, &c.unit),
                    "  ".repeat(d),
                    if d == 0 { "" } else { "└ " },
                    st.function,
                    if d == last { "   <- culprit" } else { "" }
                );
            }
            if let Some(w) = of_which(&c.explained_by, &c.unit) {
                let _ = writeln!(o, "   {w}");
            }
        }
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<28} {:<13} {:>6}  DESCRIPTION",
        "RULE", "VERDICT", "TESTED"
    );
    for rule in &r.rules {
        let v = if rule.applicable {
            rule.verdict.as_str().to_string()
        } else {
            "n/a".into()
        };
        let _ = writeln!(
            o,
            "{:<28} {} {:>6}  {}{}",
            trunc(&rule.name, 28),
            paint(&format!("{v:<13}"), rule.verdict, color && rule.applicable),
            rule.tested,
            rule.description,
            rule.note
                .as_ref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        );
    }
    if !r.findings.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "{:<13} {:<5} {:<4} {:<48} {:>12} {:>12} {:>22} {:>8} {:>8}",
            "VERDICT", "SEV", "OF", "FUNCTION", "BASELINE", "CANDIDATE", "DELTA", "P", "Q"
        );
        for f in &r.findings {
            let v = if f.allowed.is_some() {
                "allowed".to_string()
            } else {
                f.verdict.as_str().to_string()
            };
            let _ = writeln!(
                o,
                "{} {:<5} {:<4} {:<48} {:>12} {:>12} {:>22} {:>8} {:>8}",
                paint(&format!("{v:<13}"), f.verdict, color && f.allowed.is_none()),
                match f.severity {
                    crate::budgets::Severity::Fail => "fail",
                    crate::budgets::Severity::Warn => "warn",
                },
                match f.metric {
                    Some(crate::budgets::MetricKind::Flat) => "flat",
                    Some(crate::budgets::MetricKind::Cum) => "cum",
                    None => "-",
                },
                trunc(&f.function, 48),
                fmt_value(f.baseline, &f.unit),
                fmt_value(f.candidate, &f.unit),
                fmt_delta(f),
                fmt_p(f.p_value),
                fmt_p(f.q_value)
            );
            if let Some(n) = needed_text(f) {
                let _ = writeln!(o, "{:<13} {:<5} {:<4} {n}", "", "", "");
            }
            if let Some(a) = &f.allowed {
                let _ = writeln!(o, "{:<13} {:<5} {:<4} {a}", "", "", "");
            }
        }
    }
    if !r.top.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(o, "top changes ({} of {}):", scale_note(r), r.sample_type);
        let _ = writeln!(
            o,
            "{:<56} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8}",
            "FUNCTION", "FLAT A", "FLAT B", "DELTA", "CUM A", "CUM B", "Q(FLAT)"
        );
        for d in &r.top {
            let _ = writeln!(
                o,
                "{:<56} {:>7.2}% {:>7.2}% {:>+8.2}pt {:>7.2}% {:>7.2}% {:>8}",
                trunc(&d.function, 56),
                d.flat.baseline * 100.0,
                d.flat.candidate * 100.0,
                d.flat.delta * 100.0,
                d.cum.baseline * 100.0,
                d.cum.candidate * 100.0,
                fmt_p(d.flat.q_value)
            );
        }
    }
    o
}
