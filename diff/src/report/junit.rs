//! JUnit XML: one test case per rule.

use std::fmt::Write;

use super::{fmt_delta, fmt_p, fmt_value, xml_escape};
use crate::budgets::Severity;
use crate::gate::{GateReport, Verdict};

/// Render the report as JUnit XML. A rule with a failing (non-allowed,
/// `severity = "fail"`) finding is a `<failure type="regression">`; one
/// that is only inconclusive is a `<failure type="inconclusive">`; a rule
/// that could not run is `<skipped>`; warnings go to `<system-out>`.
pub fn junit(r: &GateReport) -> String {
    let mut o = String::new();
    let mut failures = 0;
    let mut skipped = 0;
    let mut cases = String::new();
    for rule in &r.rules {
        let fs: Vec<_> = r.findings.iter().filter(|f| f.rule == rule.name).collect();
        let _ = writeln!(
            cases,
            "    <testcase classname=\"profdiff.{}\" name=\"{}\">",
            xml_escape(rule.sample_type.as_deref().unwrap_or(&r.sample_type)),
            xml_escape(&rule.name)
        );
        let details: String = fs
            .iter()
            .map(|f| {
                format!(
                    "{} {}: {} -> {} ({}), p={} q={}{}\n",
                    f.verdict.as_str(),
                    f.function,
                    fmt_value(f.baseline, &f.unit),
                    fmt_value(f.candidate, &f.unit),
                    fmt_delta(f),
                    fmt_p(f.p_value),
                    fmt_p(f.q_value),
                    f.allowed
                        .as_ref()
                        .map(|a| format!(" [allowed: {a}]"))
                        .unwrap_or_default()
                )
            })
            .collect();
        let counted = rule.severity == Severity::Fail;
        if !rule.applicable {
            skipped += 1;
            let _ = writeln!(
                cases,
                "      <skipped message=\"{}\"/>",
                xml_escape(rule.note.as_deref().unwrap_or("not applicable"))
            );
        } else if counted && matches!(rule.verdict, Verdict::Fail | Verdict::Inconclusive) {
            failures += 1;
            let ty = if rule.verdict == Verdict::Fail {
                "regression"
            } else {
                "inconclusive"
            };
            let _ = writeln!(
                cases,
                "      <failure type=\"{ty}\" message=\"{}\">{}</failure>",
                xml_escape(&rule.description),
                xml_escape(&details)
            );
        } else if !details.is_empty() {
            let _ = writeln!(
                cases,
                "      <system-out>{}</system-out>",
                xml_escape(&details)
            );
        }
        let _ = writeln!(cases, "    </testcase>");
    }
    let _ = writeln!(o, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    let _ = writeln!(o, "<testsuites>");
    let _ = writeln!(
        o,
        "  <testsuite name=\"profdiff\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\">",
        r.rules.len()
    );
    let _ = writeln!(
        o,
        "    <properties>\n      <property name=\"verdict\" value=\"{}\"/>\n      <property name=\"normalization\" value=\"{}\"/>\n      <property name=\"scale\" value=\"{}\"/>\n{}    </properties>",
        r.verdict.as_str(),
        xml_escape(&r.normalization.join(", ")),
        xml_escape(&r.scale),
        r.culprits
            .iter()
            .enumerate()
            .map(|(i, c)| format!(
                "      <property name=\"culprit.{}\" value=\"{}\"/>\n",
                i + 1,
                xml_escape(&c.message)
            ))
            .collect::<String>()
    );
    o.push_str(&cases);
    let _ = writeln!(o, "  </testsuite>");
    let _ = writeln!(o, "</testsuites>");
    o
}
