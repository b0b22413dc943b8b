//! One self-contained HTML page: verdict, findings, rules, normalization
//! and both flame graphs (each in an `<iframe srcdoc>` so their scripts do
//! not collide).

use std::fmt::Write;

use super::{fmt_delta, fmt_p, fmt_value, headline, needed_text, xml_escape};
use crate::gate::{GateReport, Verdict};

fn class(v: Verdict) -> &'static str {
    v.as_str()
}

/// Render the report as HTML, embedding the candidate-width and
/// baseline-width differential flame graphs when given.
pub fn html(r: &GateReport, candidate_svg: Option<&str>, baseline_svg: Option<&str>) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>profdiff: {}</title>", xml_escape(r.verdict.as_str()));
    let _ = writeln!(o, "<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:2px 6px;font-size:13px}}td.n{{text-align:right;font-family:monospace}}.fail{{color:#b00;font-weight:bold}}.inconclusive{{color:#b80;font-weight:bold}}.improved{{color:#070;font-weight:bold}}.pass{{color:#070}}iframe{{width:100%;height:640px;border:1px solid #ccc}}code{{font-size:12px}}</style></head><body>");
    let _ = writeln!(
        o,
        "<h1 class=\"{}\">profdiff: {}</h1>",
        class(r.verdict),
        xml_escape(&headline(r))
    );
    let _ = writeln!(o, "<p>Normalization: {}. Significance: BH q &lt; {} (inconclusive &lt; {}); noise floor {}%.</p>",
        xml_escape(&r.normalization.join(", ")), r.alpha, r.inconclusive_alpha, r.noise_floor * 100.0);
    let _ = writeln!(o, "<h2>Findings</h2>");
    if r.findings.is_empty() {
        let _ = writeln!(o, "<p>No rule was breached.</p>");
    } else {
        let _ = writeln!(o, "<table><tr><th>verdict</th><th>rule</th><th>function</th><th>baseline</th><th>candidate</th><th>delta</th><th>p</th><th>q</th><th>note</th></tr>");
        for f in &r.findings {
            let note = [needed_text(f), f.allowed.clone()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("; ");
            let _ = writeln!(o, "<tr><td class=\"{}\">{}{}</td><td>{}</td><td><code>{}</code></td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td>{}</td></tr>",
                class(f.verdict), f.verdict.as_str(), if f.severity == crate::budgets::Severity::Warn { " (warn)" } else { "" },
                xml_escape(&f.rule), xml_escape(&f.function), xml_escape(&fmt_value(f.baseline, &f.unit)), xml_escape(&fmt_value(f.candidate, &f.unit)),
                xml_escape(&fmt_delta(f)), fmt_p(f.p_value), fmt_p(f.q_value), xml_escape(&note));
        }
        let _ = writeln!(o, "</table>");
    }
    let _ = writeln!(o, "<h2>Budgets applied</h2><table><tr><th>rule</th><th>verdict</th><th>tested</th><th>limit</th></tr>");
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
    let _ = writeln!(o, "</table>");
    for (title, svg) in [
        (
            "Candidate (width = candidate, colour = significant change)",
            candidate_svg,
        ),
        (
            "Baseline (width = baseline, shows vanished frames)",
            baseline_svg,
        ),
    ] {
        if let Some(svg) = svg {
            let _ = writeln!(
                o,
                "<h2>{title}</h2><iframe srcdoc=\"{}\"></iframe>",
                xml_escape(svg)
            );
        }
    }
    if !r.top.is_empty() {
        let _ = writeln!(o, "<h2>Top changes (flat share)</h2><table><tr><th>function</th><th>flat base</th><th>flat cand</th><th>delta</th><th>cum base</th><th>cum cand</th><th>q</th></tr>");
        for d in &r.top {
            let _ = writeln!(o, "<tr><td><code>{}</code></td><td class=n>{:.2}%</td><td class=n>{:.2}%</td><td class=n>{:+.2}pt</td><td class=n>{:.2}%</td><td class=n>{:.2}%</td><td class=n>{}</td></tr>",
                xml_escape(&d.function), d.flat.baseline * 100.0, d.flat.candidate * 100.0, d.flat.delta * 100.0, d.cum.baseline * 100.0, d.cum.candidate * 100.0, fmt_p(d.flat.q_value));
        }
        let _ = writeln!(o, "</table>");
    }
    let _ = writeln!(o, "</body></html>");
    o
}
