//! Plain flame graph of a recorded profile, drawn with inferno.

use std::{collections::HashMap, path::Path};

use anyhow::Context as _;
use diff::pprof::proto::Profile;

/// Folded stacks (`root;...;leaf count`) of sample value `index`, with
/// inlined functions as their own frames.
pub fn folded(profile: &Profile, index: usize) -> Vec<String> {
    let s = |i: i64| {
        profile
            .string_table
            .get(i as usize)
            .map(String::as_str)
            .unwrap_or("?")
    };
    let funcs: HashMap<u64, &str> = profile.function.iter().map(|f| (f.id, s(f.name))).collect();
    let locs: HashMap<u64, Vec<String>> = profile
        .location
        .iter()
        .map(|l| {
            let names = if l.line.is_empty() {
                vec![format!("0x{:x}", l.address)]
            } else {
                l.line
                    .iter()
                    .map(|ln| {
                        funcs
                            .get(&ln.function_id)
                            .copied()
                            .unwrap_or("?")
                            .to_string()
                    })
                    .collect()
            };
            (l.id, names)
        })
        .collect();
    let mut agg: HashMap<String, i64> = HashMap::new();
    for sample in &profile.sample {
        let v = sample.value.get(index).copied().unwrap_or(0);
        if v == 0 {
            continue;
        }
        let mut frames: Vec<&str> = Vec::new();
        for id in sample.location_id.iter().rev() {
            if let Some(names) = locs.get(id) {
                frames.extend(names.iter().rev().map(String::as_str));
            }
        }
        *agg.entry(frames.join(";")).or_default() += v;
    }
    let mut lines: Vec<String> = agg.into_iter().map(|(k, v)| format!("{k} {v}")).collect();
    lines.sort();
    lines
}

/// Write `profile` (sample type 0, samples) as an SVG flame graph.
pub fn write(profile: &Profile, path: &Path) -> anyhow::Result<()> {
    let lines = folded(profile, 0);
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = "profiler record".into();
    opts.count_name = "samples".into();
    let file = std::fs::File::create(path)?;
    let w = std::io::BufWriter::new(file);
    inferno::flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), w)
        .context("drawing the flame graph")?;
    Ok(())
}
