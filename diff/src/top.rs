//! A `go tool pprof -top`-like table: flat and cumulative value per function.
//!
//! Rows are function names (an inlined function is its own row, as in
//! pprof's default `-functions` granularity). `flat` is the value of
//! samples whose leaf frame is the function; `cum` counts each sample once
//! for every function anywhere on its stack. The total is the sum of
//! absolute sample values, and rows sort like pprof (flat, then name, then
//! cum; or cum, name, flat with `by_cum`). Values are formatted with
//! pprof's unit scaling ([`format_value`]).

use profiler_pprof::hash::FxHashMap;
use std::fmt::Write as _;

use crate::profile::{FrameId, Profile, ValueType};

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopRow {
    /// Function name.
    pub name: String,
    /// Value where the function is the leaf.
    pub flat: i64,
    /// Value where the function is anywhere on the stack.
    pub cum: i64,
    /// How calls into this function were inlined (pprof's `(inline)` marks).
    pub inline: Inline,
}

/// Whether a function was inlined into its callers, judged like pprof from
/// the caller edges of the samples: every edge inlined, some, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Inline {
    /// Never inlined (or never called from another frame).
    #[default]
    No,
    /// Inlined into every caller.
    Full,
    /// Inlined into some callers only.
    Partial,
}

/// The whole table, sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopTable {
    /// The sample type the values are of.
    pub sample_type: ValueType,
    /// Sum of absolute sample values.
    pub total: i64,
    /// Rows kept, sorted.
    pub rows: Vec<TopRow>,
    /// Rows dropped by the node fraction (|cum| below `cutoff`).
    pub dropped: usize,
    /// The |cum| below which rows were dropped.
    pub cutoff: i64,
}

/// pprof's default `-nodefraction`: rows whose |cum| is below this
/// fraction of the total are dropped.
pub const DEFAULT_NODE_FRACTION: f64 = 0.005;

/// pprof's default `-edgefraction`: call edges lighter than this fraction
/// of the total are ignored when marking rows `(inline)`.
pub const DEFAULT_EDGE_FRACTION: f64 = 0.001;

/// Computes the table for sample type `index` (which must be in range),
/// keeping every row (node fraction 0).
pub fn top(p: &Profile, index: usize, by_cum: bool) -> TopTable {
    top_with(p, index, by_cum, 0.0)
}

/// Computes the table, dropping rows whose |cum| is below `node_fraction`
/// of the total (pprof's `-nodefraction`; see [`DEFAULT_NODE_FRACTION`]).
///
/// The `(inline)` marks follow pprof: a row is inlined when every call
/// edge into it from a kept caller (dropped frames are skipped, edges
/// lighter than [`DEFAULT_EDGE_FRACTION`] ignored) was inlined in every
/// sample, partially inlined when some were.
pub fn top_with(p: &Profile, index: usize, by_cum: bool, node_fraction: f64) -> TopTable {
    // Frame id -> function row index, so names are hashed once per frame.
    let mut row_of_name: FxHashMap<&str, u32> = FxHashMap::default();
    let mut rows: Vec<TopRow> = Vec::new();
    let frame_row: Vec<u32> = p
        .frames
        .iter()
        .map(|f| {
            *row_of_name.entry(f.function.as_str()).or_insert_with(|| {
                rows.push(TopRow {
                    name: f.function.clone(),
                    flat: 0,
                    cum: 0,
                    inline: Inline::No,
                });
                (rows.len() - 1) as u32
            })
        })
        .collect();
    let row = |f: FrameId| frame_row.get(f as usize).map(|&r| r as usize);
    let mut seen = vec![u32::MAX; rows.len()];
    let mut total: i64 = 0;
    for (si, s) in p.samples.iter().enumerate() {
        let v = s.values.get(index).copied().unwrap_or(0);
        if v == 0 {
            continue;
        }
        total = total.saturating_add(v.saturating_abs());
        if let Some(r) = s.stack.first().and_then(|&f| row(f)) {
            rows[r].flat = rows[r].flat.saturating_add(v);
        }
        for &f in &s.stack {
            if let Some(r) = row(f) {
                if seen[r] != si as u32 {
                    seen[r] = si as u32;
                    rows[r].cum = rows[r].cum.saturating_add(v);
                }
            }
        }
    }
    let cutoff = (total as f64 * node_fraction) as i64;
    let kept: Vec<bool> = rows
        .iter()
        .map(|r| (r.flat != 0 || r.cum != 0) && r.cum.saturating_abs() >= cutoff)
        .collect();

    // Call edges between kept rows: (caller, callee) -> (weight, all
    // inlined, last sample counted). Only callees with some inlined frame
    // can be marked, so only their edges are tracked.
    let mut could_inline = vec![false; rows.len()];
    for (f, &r) in p.frames.iter().zip(&frame_row) {
        could_inline[r as usize] |= f.inlined;
    }
    let mut edges: FxHashMap<(u32, u32), (i64, bool, u32)> = FxHashMap::default();
    for (si, s) in p.samples.iter().enumerate() {
        let v = s.values.get(index).copied().unwrap_or(0);
        if v == 0 {
            continue;
        }
        let mut parent: Option<u32> = None;
        for &f in s.stack.iter().rev() {
            let Some(r) = row(f) else { continue };
            if !kept[r] {
                continue;
            }
            if let (Some(pr), true) = (parent, could_inline[r]) {
                let inl = p.frames[f as usize].inlined;
                let e = edges.entry((pr, r as u32)).or_insert((0, true, u32::MAX));
                if e.2 != si as u32 {
                    e.2 = si as u32;
                    e.0 = e.0.saturating_add(v);
                }
                e.1 &= inl;
            }
            parent = Some(r as u32);
        }
    }
    let edge_cutoff = (total as f64 * DEFAULT_EDGE_FRACTION) as i64;
    let mut inl = vec![(false, false); rows.len()];
    for (&(_, callee), &(w, all_inline, _)) in &edges {
        if w.saturating_abs() < edge_cutoff {
            continue;
        }
        let slot = &mut inl[callee as usize];
        if all_inline {
            slot.0 = true;
        } else {
            slot.1 = true;
        }
    }
    for (row, &(i, n)) in rows.iter_mut().zip(&inl) {
        row.inline = match (i, n) {
            (true, false) => Inline::Full,
            (true, true) => Inline::Partial,
            _ => Inline::No,
        };
    }
    let nonzero = rows.iter().filter(|r| r.flat != 0 || r.cum != 0).count();
    let mut rows: Vec<TopRow> = rows
        .into_iter()
        .zip(&kept)
        .filter(|(_, &k)| k)
        .map(|(r, _)| r)
        .collect();
    if by_cum {
        rows.sort_by(|a, b| {
            b.cum
                .unsigned_abs()
                .cmp(&a.cum.unsigned_abs())
                .then_with(|| a.name.cmp(&b.name))
                .then_with(|| b.flat.unsigned_abs().cmp(&a.flat.unsigned_abs()))
        });
    } else {
        rows.sort_by(|a, b| {
            b.flat
                .unsigned_abs()
                .cmp(&a.flat.unsigned_abs())
                .then_with(|| a.name.cmp(&b.name))
                .then_with(|| b.cum.unsigned_abs().cmp(&a.cum.unsigned_abs()))
        });
    }
    TopTable {
        sample_type: p.sample_types.get(index).cloned().unwrap_or_default(),
        total,
        dropped: nonzero - rows.len(),
        cutoff,
        rows,
    }
}

struct UnitDef {
    name: &'static str,
    aliases: &'static [&'static str],
    factor: f64,
}

const MEMORY: &[UnitDef] = &[
    UnitDef {
        name: "B",
        aliases: &["b", "byte"],
        factor: 1.0,
    },
    UnitDef {
        name: "kB",
        aliases: &["kb", "kbyte", "kilobyte"],
        factor: 1024.0,
    },
    UnitDef {
        name: "MB",
        aliases: &["mb", "mbyte", "megabyte"],
        factor: 1048576.0,
    },
    UnitDef {
        name: "GB",
        aliases: &["gb", "gbyte", "gigabyte"],
        factor: 1073741824.0,
    },
    UnitDef {
        name: "TB",
        aliases: &["tb", "tbyte", "terabyte"],
        factor: 1099511627776.0,
    },
    UnitDef {
        name: "PB",
        aliases: &["pb", "pbyte", "petabyte"],
        factor: 1125899906842624.0,
    },
];

const TIME: &[UnitDef] = &[
    UnitDef {
        name: "ns",
        aliases: &["ns", "nanosecond"],
        factor: 1.0,
    },
    UnitDef {
        name: "us",
        aliases: &["μs", "us", "microsecond"],
        factor: 1e3,
    },
    UnitDef {
        name: "ms",
        aliases: &["ms", "millisecond"],
        factor: 1e6,
    },
    UnitDef {
        name: "s",
        aliases: &["s", "sec", "second"],
        factor: 1e9,
    },
    UnitDef {
        name: "hrs",
        aliases: &["hour", "hr"],
        factor: 3600e9,
    },
];

/// Formats a value like pprof's `measurement.ScaledLabel` with automatic
/// scaling: `7.12s`, `1.50MB`, `712` (counts have no unit).
pub fn format_value(value: i64, unit: &str) -> String {
    format_value_in(value, unit, None)
}

/// Formats a value in the unit `to` (a canonical pprof unit name such as
/// `ms` or `MB`; automatic scaling when `None` or not of the same kind).
pub fn format_value_in(value: i64, unit: &str, to: Option<&str>) -> String {
    let (v, u) = scale(value, unit, to);
    let s = format!("{v:.2}");
    let s = s.strip_suffix(".00").unwrap_or(&s).to_owned();
    if s == "0" || s == "-0" {
        return "0".into();
    }
    s + u
}

fn sniff(table: &'static [UnitDef], unit: &str) -> Option<&'static UnitDef> {
    let mut lower = unit.to_lowercase();
    if lower.chars().count() > 2 {
        if let Some(s) = lower.strip_suffix('s') {
            lower = s.to_owned();
        }
    }
    table.iter().find(|u| u.aliases.contains(&lower.as_str()))
}

fn scale(value: i64, unit: &str, to: Option<&str>) -> (f64, &'static str) {
    if value < 0 {
        let (v, u) = scale(value.saturating_neg(), unit, to);
        return (-v, u);
    }
    for table in [MEMORY, TIME] {
        if let Some(from) = sniff(table, unit) {
            let v = value as f64 * from.factor;
            if let Some(to) = to.and_then(|t| table.iter().find(|u| u.name == t)) {
                return (v / to.factor, to.name);
            }
            let mut best: Option<&UnitDef> = None;
            for u in table {
                if best.is_none_or(|b| u.factor >= b.factor) && v / u.factor >= 1.0 {
                    best = Some(u);
                }
            }
            return match best {
                Some(b) => (v / b.factor, b.name),
                // Below the smallest unit: pprof uses the type's default unit.
                None if std::ptr::eq(table, MEMORY) => (v, "B"),
                None => (v / 1e9, "s"),
            };
        }
    }
    (value as f64, "")
}

/// pprof's `selectOutputUnit`: one unit for the whole table, chosen from
/// the smallest non-zero row value and the total.
pub fn select_output_unit(rows: &[TopRow], total: i64, unit: &str) -> Option<&'static str> {
    let mut min: i64 = 0;
    for r in rows {
        let mut m = r.flat.saturating_abs();
        if m == 0 {
            m = r.cum.saturating_abs();
        }
        if m > 0 && (min == 0 || m < min) {
            min = m;
        }
    }
    let max = total;
    if min == 0 {
        min = max;
    }
    let (_, min_unit) = scale(min, unit, None);
    let (_, max_unit) = scale(max, unit, None);
    let chosen = if min_unit != max_unit && min.saturating_mul(100) < max {
        scale(min.saturating_mul(100), unit, None).1
    } else {
        min_unit
    };
    (!chosen.is_empty()).then_some(chosen)
}

/// Formats `value` as a percentage of `total` like pprof (`  100%`,
/// `50.85%`, ` 0.42%`).
pub fn percentage(value: i64, total: i64) -> String {
    let ratio = if total != 0 {
        (value as f64 / total as f64).abs() * 100.0
    } else {
        0.0
    };
    if (99.95..=100.05).contains(&ratio) {
        "  100%".into()
    } else if ratio >= 1.0 {
        format!("{ratio:5.2}%")
    } else {
        format!("{:>5}%", go_g2(ratio))
    }
}

/// Go's `%.2g`.
fn go_g2(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    let e = format!("{x:.1e}"); // d.de±x
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..2).contains(&exp) {
        let mant = mant.trim_end_matches('0').trim_end_matches('.');
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mant}e{sign}{:02}", exp.abs());
    }
    let decimals = (1 - exp).max(0) as usize;
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// Renders the table as text like `go tool pprof -top`, keeping the first
/// `limit` rows (all when `None`).
pub fn render(t: &TopTable, limit: Option<usize>) -> String {
    let unit = t.sample_type.unit.as_str();
    let kept = &t.rows;
    let dropped = t.dropped;
    let cutoff = t.cutoff;
    let shown = &kept[..limit.unwrap_or(kept.len()).min(kept.len())];
    let flat_sum: i64 = shown.iter().map(|r| r.flat).sum();
    let to = select_output_unit(shown, t.total, unit);
    let fmt = |v: i64| format_value_in(v, unit, to);
    let mut out = String::new();
    let _ = writeln!(out, "Type: {}", t.sample_type.kind);
    let _ = writeln!(
        out,
        "Showing nodes accounting for {}, {} of {} total",
        fmt(flat_sum),
        percentage(flat_sum, t.total).trim(),
        fmt(t.total)
    );
    if dropped > 0 {
        let _ = writeln!(out, "Dropped {dropped} nodes (cum <= {})", fmt(cutoff));
    }
    if shown.len() < kept.len() {
        let _ = writeln!(
            out,
            "Showing top {} nodes out of {}",
            shown.len(),
            kept.len()
        );
    }
    let _ = writeln!(
        out,
        "{:>10} {:>5}% {:>5}% {:>10} {:>5}%",
        "flat", "flat", "sum", "cum", "cum"
    );
    let mut sum = 0i64;
    for r in shown {
        sum = sum.saturating_add(r.flat);
        let _ = writeln!(
            out,
            "{:>10} {} {} {:>10} {}  {}{}",
            fmt(r.flat),
            percentage(r.flat, t.total),
            percentage(sum, t.total),
            fmt(r.cum),
            percentage(r.cum, t.total),
            r.name,
            match r.inline {
                Inline::No => "",
                Inline::Full => " (inline)",
                Inline::Partial => " (partial-inline)",
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_pprof() {
        assert_eq!(format_value(7_120_000_000, "nanoseconds"), "7.12s");
        assert_eq!(format_value(10_000_000, "nanoseconds"), "10ms");
        assert_eq!(format_value(1536, "bytes"), "1.50kB");
        assert_eq!(format_value(712, "count"), "712");
        assert_eq!(format_value(0, "nanoseconds"), "0");
        assert_eq!(format_value(1900, "microseconds"), "1.90ms");
        assert_eq!(percentage(1, 2), "50.00%");
        assert_eq!(percentage(1, 1), "  100%");
        assert_eq!(percentage(1, 200), "  0.5%");
        assert_eq!(percentage(1, 80000), "0.0013%");
    }
}
