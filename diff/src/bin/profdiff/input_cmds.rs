//! The input-side subcommands of `profdiff`: `top`, `merge`, `convert`
//! and `flamegraph`. `main.rs` parses the command line and calls the
//! `run_*` functions, which return the process exit code (0 on success;
//! errors are returned for `main` to print).

use anyhow::{bail, Context};
use diff::cli::{ConvertArgs, FlamegraphArgs, MergeArgs, OutputArgs, OutputFormat, TopArgs};
use diff::input::{self, load_many, load_profile, sample_types_string, select_sample_type_for};
use diff::Profile;

/// Writes `p` where and how `o` says.
fn write_profile(p: &Profile, o: &OutputArgs) -> anyhow::Result<()> {
    let out = &o.output;
    let bytes = match o.format() {
        OutputFormat::Pprof => diff::pprof::encode_gzip(p),
        OutputFormat::Folded => {
            let idx = select_sample_type_for(p, o.sample_type.as_deref(), out)?;
            diff::folded::write(p, idx).into_bytes()
        }
    };
    std::fs::write(out, bytes).with_context(|| format!("{}: cannot write", out.display()))
}

/// Runs `profdiff top`.
pub fn run_top(a: &TopArgs) -> anyhow::Result<i32> {
    let p = load_profile(&a.file)?;
    let idx = select_sample_type_for(&p, a.sample_type.as_deref(), &a.file)?;
    let table = diff::top::top_with(&p, idx, a.cum, a.node_fraction);
    let mut text = format!("File: {}\n", a.file.display());
    text.push_str(&diff::top::render(&table, a.n));
    print_stdout(&text)?;
    Ok(0)
}

/// Prints to stdout; a closed pipe (`| head`) is not an error.
fn print_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

/// Runs `profdiff merge`.
pub fn run_merge(a: &MergeArgs) -> anyhow::Result<i32> {
    let loaded = load_many(&a.files)?;
    let merged = input::merge(&loaded)?;
    write_profile(&merged, &a.out)?;
    eprintln!(
        "merged {} profiles ({} samples) into {}",
        loaded.len(),
        merged.samples.len(),
        a.out.output.display()
    );
    Ok(0)
}

/// Runs `profdiff convert`.
pub fn run_convert(a: &ConvertArgs) -> anyhow::Result<i32> {
    let p = load_profile(&a.input)?;
    write_profile(&p, &a.out)?;
    Ok(0)
}

/// Runs `profdiff flamegraph`.
pub fn run_flamegraph(a: &FlamegraphArgs) -> anyhow::Result<i32> {
    let p = load_profile(&a.file)?;
    let idx = select_sample_type_for(&p, a.sample_type.as_deref(), &a.file)?;
    let folded = diff::folded::write(&p, idx);
    // Flame graphs show positive weights only.
    let lines: Vec<&str> = folded
        .lines()
        .filter(|l| {
            l.rsplit_once(' ')
                .and_then(|(_, n)| n.parse::<i64>().ok())
                .is_some_and(|n| n > 0)
        })
        .collect();
    if lines.is_empty() {
        bail!(
            "{}: no positive {} values to draw (sample types: {})",
            a.file.display(),
            p.sample_types[idx],
            sample_types_string(&p)
        );
    }
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = a.title.clone().unwrap_or_else(|| {
        format!(
            "{} ({})",
            a.file.file_name().map_or_else(
                || a.file.display().to_string(),
                |n| n.to_string_lossy().into_owned()
            ),
            p.sample_types[idx]
        )
    });
    opts.count_name = p.sample_types[idx].unit.clone();
    let file = std::fs::File::create(&a.output)
        .with_context(|| format!("{}: cannot create", a.output.display()))?;
    let mut w = std::io::BufWriter::new(file);
    inferno::flamegraph::from_lines(&mut opts, lines.iter().copied(), &mut w)
        .with_context(|| format!("{}: cannot render flame graph", a.output.display()))?;
    use std::io::Write;
    w.flush()
        .with_context(|| format!("{}: cannot write", a.output.display()))?;
    Ok(0)
}
