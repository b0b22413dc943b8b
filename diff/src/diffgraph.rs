//! Differential flame graphs (SVG, via `inferno`).
//!
//! Frame width is the candidate's samples (or the baseline's with
//! [`DiffGraphOptions::base_width`], so frames that vanished stay visible).
//! Colour is the change of the frame's *function*, and only for functions
//! whose change is significant (BH q < alpha; self change by default, or
//! cumulative with [`DiffGraphOptions::color_by_cum`]): red for growth, blue
//! for shrinkage, intensity proportional to the change relative to the
//! largest significant change; everything else is neutral grey. Tooltips
//! carry the frame's own samples plus the function's baseline and candidate
//! values and delta. Output is deterministic: colours come from a palette
//! map we fill, never from inferno's random palette.

use std::collections::HashMap;
use std::io::{self, Write};

use inferno::flamegraph::{self, color::Color, color::PaletteMap, Options};

use crate::compare::{Comparison, FunctionDelta};

/// Options for [`render`].
#[derive(Debug, Clone)]
pub struct DiffGraphOptions {
    /// Width from the baseline instead of the candidate.
    pub base_width: bool,
    /// Colour by cumulative change instead of self change.
    pub color_by_cum: bool,
    /// Significance level (on BH q-values) for colouring.
    pub alpha: f64,
    /// Title at the top of the graph.
    pub title: String,
}

impl Default for DiffGraphOptions {
    fn default() -> Self {
        DiffGraphOptions {
            base_width: false,
            color_by_cum: false,
            alpha: 0.01,
            title: "profdiff differential flame graph".into(),
        }
    }
}

/// Neutral colour for unchanged or not significantly changed functions.
pub const NEUTRAL: Color = Color {
    r: 221,
    g: 221,
    b: 221,
};

/// Colour for a significant change: `x` in [-1, 1], growth positive.
pub fn change_color(x: f64) -> Color {
    let x = x.clamp(-1.0, 1.0);
    // From a pale tint (small change) to saturated (largest change).
    let k = 0.25 + 0.75 * x.abs();
    let fade = (210.0 * (1.0 - k)) as u8;
    if x >= 0.0 {
        Color {
            r: 255,
            g: fade,
            b: fade,
        }
    } else {
        Color {
            r: fade,
            g: fade,
            b: 255,
        }
    }
}

fn frame_name(s: &str) -> String {
    s.replace(';', ":")
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

fn escape(s: &str) -> String {
    crate::report::xml_escape_pub(s)
}

/// Render a differential flame graph of `cmp` (functions from
/// [`Comparison::functions`] with share scale) into `out`.
pub fn render(
    cmp: &Comparison,
    funcs: &[FunctionDelta],
    opts: &DiffGraphOptions,
    out: impl Write,
) -> io::Result<()> {
    // Folded lines: width side's sample counts per stack.
    let runs = if opts.base_width {
        &cmp.base
    } else {
        &cmp.cand
    };
    let mut acc: HashMap<&[u32], f64> = HashMap::new();
    for r in runs {
        let w = if r.weight > 0.0 { r.weight } else { 1.0 };
        for (s, v) in &r.stacks {
            *acc.entry(s).or_default() += v / w;
        }
    }
    let mut lines: Vec<String> = acc
        .into_iter()
        .filter_map(|(s, c)| {
            let c = c.round() as u64;
            (c > 0).then(|| {
                let names: Vec<String> = s
                    .iter()
                    .map(|&f| frame_name(&cmp.table.funcs[f as usize].name))
                    .collect();
                format!("{} {c}", names.join(";"))
            })
        })
        .collect();
    lines.sort();

    // Colours and tooltip text per function name.
    let sig: Vec<(&FunctionDelta, f64)> = funcs
        .iter()
        .filter_map(|d| {
            let m = if opts.color_by_cum { &d.cum } else { &d.flat };
            match m.q_value {
                Some(q) if q < opts.alpha && m.delta != 0.0 => Some((d, m.delta)),
                _ => None,
            }
        })
        .collect();
    let max = sig.iter().map(|(_, d)| d.abs()).fold(0.0f64, f64::max);
    let mut palette = PaletteMap::default();
    for f in &cmp.table.funcs {
        palette.insert(frame_name(&f.name), NEUTRAL);
    }
    for (d, delta) in &sig {
        palette.insert(
            frame_name(&d.function),
            change_color(delta / max.max(1e-300)),
        );
    }
    let mut tips: HashMap<String, String> = HashMap::new();
    for d in funcs {
        let q = |m: &crate::compare::Metric| match m.q_value {
            Some(q) if q < 1e-3 => format!(", q={q:.1e}"),
            Some(q) => format!(", q={q:.3}"),
            None => String::new(),
        };
        tips.insert(
            frame_name(&d.function),
            format!(
                " | self {:.2}% → {:.2}% ({:+.2}pt{}) | cum {:.2}% → {:.2}% ({:+.2}pt{})",
                d.flat.baseline * 100.0,
                d.flat.candidate * 100.0,
                d.flat.delta * 100.0,
                q(&d.flat),
                d.cum.baseline * 100.0,
                d.cum.candidate * 100.0,
                d.cum.delta * 100.0,
                q(&d.cum)
            ),
        );
    }

    let mut o = Options::default();
    o.title = opts.title.clone();
    o.subtitle = Some(format!(
        "width: {}; colour: significant {} change (red = grew, blue = shrank, grey = not significant)",
        if opts.base_width { "baseline" } else { "candidate" },
        if opts.color_by_cum { "cumulative" } else { "self" }
    ));
    o.count_name = "samples".into();
    o.deterministic = true;
    o.palette_map = Some(&mut palette);
    let mut svg = Vec::new();
    if lines.is_empty() {
        lines.push("[no samples] 1".into());
    }
    flamegraph::from_lines(&mut o, lines.iter().map(String::as_str), &mut svg)
        .map_err(io::Error::other)?;
    let svg = String::from_utf8_lossy(&svg);
    write_with_tooltips(&svg, &tips, out)
}

/// Append the function-level values to every frame's `<title>`.
fn write_with_tooltips(
    svg: &str,
    tips: &HashMap<String, String>,
    mut out: impl Write,
) -> io::Result<()> {
    let mut rest = svg;
    while let Some(i) = rest.find("<title>") {
        let (head, tail) = rest.split_at(i + "<title>".len());
        out.write_all(head.as_bytes())?;
        let end = tail.find("</title>").unwrap_or(tail.len());
        let text = &tail[..end];
        out.write_all(text.as_bytes())?;
        // "NAME (N samples, P%)": the name is everything before the last " (".
        if let Some(j) = text.rfind(" (") {
            if let Some(t) = tips.get(&unescape(&text[..j])) {
                out.write_all(escape(t).as_bytes())?;
            }
        }
        rest = &tail[end..];
    }
    out.write_all(rest.as_bytes())
}
