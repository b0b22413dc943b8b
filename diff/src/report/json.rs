//! JSON report (schema `profdiff.gate/v1`, documented in `docs/profdiff.md`).

use serde::Serialize;

use crate::gate::GateReport;

/// Schema identifier written into every JSON report.
pub const JSON_SCHEMA: &str = "profdiff.gate/v1";

#[derive(Serialize)]
struct Doc<'a> {
    schema: &'static str,
    exit_code: i32,
    #[serde(flatten)]
    report: &'a GateReport,
}

/// Render the report as pretty JSON (with a trailing newline).
pub fn json(r: &GateReport) -> String {
    let doc = Doc {
        schema: JSON_SCHEMA,
        exit_code: r.verdict.exit_code(),
        report: r,
    };
    let mut s =
        serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}
