//! [`canonical_text`]: a deterministic dump for reference tests.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use crate::proto;

/// A deterministic text dump of a profile for reference tests, in the
/// spirit of google/pprof's `Profile.String()` but independent of id
/// assignment and order: header fields, mappings sorted by file name,
/// then samples sorted by their rendered text, each sample listing its
/// frames leaf first as `address mapping-file function file:line`, with
/// inlined functions joined by ` <- ` (innermost first). Addresses are
/// printed as stored (normalized ELF addresses for mapped frames).
pub fn canonical_text(p: &proto::Profile) -> String {
    let st = |i: i64| -> &str {
        usize::try_from(i)
            .ok()
            .and_then(|i| p.string_table.get(i))
            .map(String::as_str)
            .unwrap_or("?")
    };
    let vt = |v: &proto::ValueType| format!("{}/{}", st(v.r#type), st(v.unit));
    let mut out = String::new();
    let types: Vec<String> = p.sample_type.iter().map(vt).collect();
    let _ = writeln!(out, "sample_types: {}", types.join(" "));
    let _ = writeln!(
        out,
        "period_type: {} period: {}",
        p.period_type.as_ref().map(vt).unwrap_or_default(),
        p.period
    );
    let _ = writeln!(
        out,
        "time_nanos: {} duration_nanos: {}",
        p.time_nanos, p.duration_nanos
    );
    for c in &p.comment {
        let _ = writeln!(out, "comment: {}", st(*c));
    }
    let mappings: HashMap<u64, &proto::Mapping> = p.mapping.iter().map(|m| (m.id, m)).collect();
    let functions: HashMap<u64, &proto::Function> = p.function.iter().map(|f| (f.id, f)).collect();
    let locations: HashMap<u64, &proto::Location> = p.location.iter().map(|l| (l.id, l)).collect();
    let mut ms: Vec<String> = p
        .mapping
        .iter()
        .map(|m| {
            let mut flags = String::new();
            for (b, f) in [
                (m.has_functions, "[FN]"),
                (m.has_filenames, "[FL]"),
                (m.has_line_numbers, "[LN]"),
                (m.has_inline_frames, "[IN]"),
            ] {
                if b {
                    flags.push_str(f);
                }
            }
            format!(
                "  {} build_id={} {:#x}/{:#x}/{:#x} {}",
                st(m.filename),
                st(m.build_id),
                m.memory_start,
                m.memory_limit,
                m.file_offset,
                flags
            )
        })
        .collect();
    ms.sort();
    let _ = writeln!(out, "mappings:");
    for m in ms {
        let _ = writeln!(out, "{}", m.trim_end());
    }
    let mut samples: Vec<String> = p
        .sample
        .iter()
        .map(|s| {
            let mut t = String::new();
            let vals: Vec<String> = s.value.iter().map(i64::to_string).collect();
            let mut labels: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            for l in &s.label {
                let v = if l.str != 0 {
                    format!("{:?}", st(l.str))
                } else {
                    l.num.to_string()
                };
                labels.entry(st(l.key)).or_default().push(v);
            }
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=[{}]", v.join(",")))
                .collect();
            let _ = writeln!(t, "  values=[{}] {}", vals.join(" "), labels.join(" "));
            for id in &s.location_id {
                let Some(loc) = locations.get(id) else {
                    let _ = writeln!(t, "    <missing location {id}>");
                    continue;
                };
                let file = mappings
                    .get(&loc.mapping_id)
                    .map(|m| st(m.filename))
                    .unwrap_or("?");
                let lines: Vec<String> = loc
                    .line
                    .iter()
                    .map(|l| match functions.get(&l.function_id) {
                        Some(f) => {
                            let mut x = st(f.name).to_string();
                            if f.system_name != f.name {
                                let _ = write!(x, "[{}]", st(f.system_name));
                            }
                            if f.filename != 0 || l.line != 0 {
                                let _ = write!(x, " {}:{}", st(f.filename), l.line);
                            }
                            x
                        }
                        None => format!("<missing function {}>", l.function_id),
                    })
                    .collect();
                let sym = if lines.is_empty() {
                    "??".to_string()
                } else {
                    lines.join(" <- ")
                };
                let _ = writeln!(t, "    {:#x} {} {}", loc.address, file, sym);
            }
            t
        })
        .collect();
    samples.sort();
    let _ = writeln!(out, "samples:");
    for s in samples {
        out.push_str(&s);
    }
    out
}
