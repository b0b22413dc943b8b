//! `profdiff`: compare pprof profiles and gate on budgets.
//!
//! Exit codes: 0 pass (or improved; `diff` always 0), 1 regression,
//! 2 usage or input error, 3 inconclusive. Errors are one line:
//! `profdiff: <error chain>`. A closed stdout (broken pipe) exits 0.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser as _;

use diff::budgets::Budgets;
use diff::cli::{Cli, Cmd, ColorArg, CommonArgs, DiffArgs, ScaleArg};
use diff::compare::Comparison;
use diff::diffgraph::{self, ColorBy, DiffGraphOptions, FrameTree};
use diff::gate::{Gate, GateReport};
use diff::normalize::{NormalizeOptions, Normalizer, Rewrite, Rule, Scale};
use diff::{report, Profile};

mod input_cmds;
#[cfg(target_os = "linux")]
mod pages;

/// mimalloc: about 15% less CPU than glibc's malloc for `gate` on two
/// large profiles (millions of small stack and value vectors; measured
/// with `cargo xtask bench diff-vs-pprof`). Only this binary uses it; the
/// `diff` library leaves the allocator to its user.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 2's `mi_option_e` (mimalloc.h),
/// which libmimalloc-sys does not name.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc never to hand freed memory back to the system. By
/// default it does so 10 ms after a page empties (`madvise`), and a
/// short-lived process like this one then faults the same memory in, and
/// has the kernel zero it, a second time when it allocates again (the
/// loading threads free their decompressed files before the comparison
/// allocates its sums), and purges everything once more at exit. Measured
/// on the corpus' two largest Pyroscope profiles: `gate` about 4% less
/// wall time, peak RSS 72 -> 75 MiB (docs/profdiff.md, "Speed").
fn keep_freed_memory() {
    // SAFETY: sets one of mimalloc's option words (read when it purges);
    // no memory of ours is involved.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

fn normalizer(a: &CommonArgs) -> Result<Normalizer> {
    let disabled = Rule::parse_list(&a.no_normalize).context("--no-normalize")?;
    let re = |flag: &str, s: &Option<String>| -> Result<Option<regex::Regex>> {
        s.as_deref()
            .map(|s| regex::Regex::new(s).with_context(|| format!("{flag}: invalid regex {s:?}")))
            .transpose()
    };
    let rewrites = a
        .rewrite
        .iter()
        .map(|r| Rewrite::parse(r).with_context(|| "--rewrite".to_string()))
        .collect::<Result<Vec<_>>>()?;
    Ok(Normalizer::new(NormalizeOptions {
        disabled,
        no_kernel: a.no_kernel,
        rewrites,
        focus: re("--focus", &a.focus)?,
        ignore: re("--ignore", &a.ignore)?,
        prune: re("--prune", &a.prune)?,
    }))
}

fn load(paths: &[PathBuf], side: &str) -> Result<Vec<(String, Profile)>> {
    let v = diff::input::load_many(paths).with_context(|| format!("--{side}"))?;
    if v.is_empty() {
        bail!("--{side}: no profiles found");
    }
    Ok(v.into_iter()
        .map(|(p, prof)| (p.display().to_string(), prof))
        .collect())
}

/// A loaded profile and its source.
type Loaded = (String, Profile);

fn write_file(path: &Path, content: &str, flag: &str) -> Result<()> {
    if path == Path::new("-") {
        let mut out = std::io::stdout().lock();
        out.write_all(content.as_bytes())?;
        out.flush()?;
        return Ok(());
    }
    std::fs::write(path, content).with_context(|| format!("{flag}: writing {}", path.display()))
}

fn signed(x: f64) -> String {
    let s = diff::gate::fmt_num(x);
    if x > 0.0 {
        format!("+{s}")
    } else {
        s
    }
}

fn use_color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn run_compare(
    a: &CommonArgs,
    budgets: Option<&Path>,
    diff_args: Option<&DiffArgs>,
) -> Result<i32> {
    if !(a.alpha > 0.0 && a.alpha < 1.0) {
        bail!("--alpha must be in (0, 1), got {}", a.alpha);
    }
    if !(0.0..100.0).contains(&a.noise_floor) {
        bail!(
            "--noise-floor must be a percentage in [0, 100), got {}",
            a.noise_floor
        );
    }
    let norm = normalizer(a)?;
    let mut budgets = match budgets {
        Some(p) => Budgets::load(p).context("--budgets")?,
        None => Budgets::default(),
    };
    if budgets.rules.is_empty() || budgets.settings == Default::default() {
        // Command-line settings apply unless the budgets file set them.
    }
    if budgets.settings.alpha == diff::budgets::Settings::default().alpha {
        budgets.settings.alpha = a.alpha;
    }
    if budgets.settings.noise_floor == diff::budgets::Settings::default().noise_floor {
        budgets.settings.noise_floor = a.noise_floor / 100.0;
    }
    // The lean path: pprof files straight to the comparison, each file on
    // its own thread, when the gate needs no profile beyond the primary
    // comparison (no rule on another sample type, no quantile rule).
    let key = budgets
        .settings
        .sample_type
        .clone()
        .or_else(|| a.sample_type.clone());
    let lean = budgets.rules.iter().all(|r| {
        r.sample_type.is_none() && !matches!(r.kind, diff::budgets::RuleKind::Quantile { .. })
    });
    let files = |paths: &[PathBuf]| -> Option<Vec<String>> {
        paths
            .iter()
            .map(|p| {
                p.is_file()
                    .then(|| p.to_str().map(str::to_string))
                    .flatten()
            })
            .collect()
    };
    let preset = match (lean, files(&a.baseline), files(&a.candidate)) {
        (true, Some(b), Some(c)) => {
            Comparison::from_pprof_files(&b, &c, key.as_deref(), &norm).map(|cmp| (cmp, b, c))
        }
        _ => None,
    };
    // Never freed: the process ends after the reports, and freeing millions
    // of small stacks one by one only costs time.
    let mut gate = std::mem::ManuallyDrop::new(match preset {
        Some((cmp, b, c)) => Gate::with_comparison(cmp, b, c, &norm, a.sample_type.clone()),
        None => {
            // Both sides decode at the same time (errors: the baseline's first).
            let (base, cand) = std::thread::scope(|s| {
                let cand = s.spawn(|| load(&a.candidate, "candidate"));
                let base = load(&a.baseline, "baseline");
                let cand = cand.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
                (base, cand)
            });
            let (base, cand): (&[Loaded], &[Loaded]) = (Vec::leak(base?), Vec::leak(cand?));
            let bref: Vec<(String, &Profile)> = base.iter().map(|(n, p)| (n.clone(), p)).collect();
            let cref: Vec<(String, &Profile)> = cand.iter().map(|(n, p)| (n.clone(), p)).collect();
            Gate::new(bref, cref, &norm, a.sample_type.clone())
        }
    });
    gate.scale = match a.scale {
        ScaleArg::Share => Scale::Share,
        ScaleArg::Compositional => Scale::Compositional,
        ScaleArg::Rate if diff_args.is_some() => Scale::Share,
        ScaleArg::Rate => bail!(
            "--normalize rate: the gate's relative rules compare shares; use share or compositional (absolute rules take `per` in the budgets file)"
        ),
    };
    gate.default_max_percent = a.max_growth;
    gate.top_n = a.top;
    let mut rep: GateReport = gate.run(&budgets)?;

    let mut stacks_text = String::new();
    if let Some(d) = diff_args {
        let scale = match (d.per, &d.per_sample_type, a.scale) {
            (Some(n), _, _) => Scale::PerUnit(n),
            (None, Some(t), _) => Scale::PerSampleType(t.clone()),
            (None, None, ScaleArg::Rate) => Scale::Rate,
            (None, None, ScaleArg::Share) => Scale::Share,
            (None, None, ScaleArg::Compositional) => Scale::Compositional,
        };
        let (cmp, _) = gate.primary().context("no comparison")?;
        let tabled = gate.primary_scale().cloned().unwrap_or_default();
        if scale != tabled && scale != Scale::Compositional {
            let mut f = cmp.functions(&diff::compare::CompareOptions {
                scale: scale.clone(),
                noise_floor: budgets.settings.noise_floor,
                confidence: 0.95,
            })?;
            f.truncate(a.top);
            stacks_text.push_str(&format!(
                "\ntop changes ({}, {}):\n",
                cmp.unit(&scale),
                scale
            ));
            for x in &f {
                stacks_text.push_str(&format!(
                    "{:<56} flat {} -> {} ({}) cum {} -> {}\n",
                    x.function,
                    diff::gate::fmt_num(x.flat.baseline),
                    diff::gate::fmt_num(x.flat.candidate),
                    signed(x.flat.delta),
                    diff::gate::fmt_num(x.cum.baseline),
                    diff::gate::fmt_num(x.cum.candidate),
                ));
            }
        }
        if d.stacks > 0 {
            stacks_text.push_str(&format!(
                "\ntop {} stack changes ({}):\n",
                d.stacks,
                cmp.unit(&scale)
            ));
            let unit = cmp.unit(&scale);
            for s in cmp.stacks(&scale, d.stacks)? {
                let delta = if unit == "%" {
                    format!("{:+.2}pt", s.delta * 100.0)
                } else {
                    signed(s.delta)
                };
                stacks_text.push_str(&format!(
                    "{:>12} {} -> {}  {}\n",
                    delta,
                    report::format_value(s.baseline, &unit),
                    report::format_value(s.candidate, &unit),
                    s.stack
                ));
            }
        }
    }
    // Flame graphs: one merged, tested frame tree for the SVGs and the HTML
    // page, on the gate's scale.
    let cscale = gate
        .primary()
        .map(|(cmp, _)| diffgraph::candidate_scale(cmp, gate.primary_scale()))
        .unwrap_or(1.0);
    let graph_opts = |base_width: bool, cmp: &diff::compare::Comparison| DiffGraphOptions {
        base_width,
        color_by: match a.flamegraph_color {
            ColorArg::SelfValue if !a.flamegraph_cum => ColorBy::SelfValue,
            _ => ColorBy::Inclusive,
        },
        alpha: budgets.settings.alpha,
        noise_floor: budgets.settings.noise_floor,
        candidate_scale: cscale,
        title: format!(
            "profdiff: {} ({} width)",
            cmp.sample_type,
            if base_width { "baseline" } else { "candidate" }
        ),
    };
    let mut tree = None;
    for (path, base_width, flag) in [
        (&a.flamegraph, false, "--flamegraph"),
        (&a.flamegraph_base_width, true, "--flamegraph-base-width"),
    ] {
        let (Some(path), Some((cmp, _))) = (path, gate.primary()) else {
            continue;
        };
        let opts = graph_opts(base_width, cmp);
        let t = tree.get_or_insert_with(|| FrameTree::build(cmp, &opts));
        let mut buf = Vec::new();
        diffgraph::render_tree(t, &opts, &mut buf).context("rendering flame graph")?;
        write_file(path, &String::from_utf8_lossy(&buf), flag)?;
    }
    if a.html.is_some() && tree.is_none() {
        if let Some((cmp, _)) = gate.primary() {
            tree = Some(FrameTree::build(cmp, &graph_opts(false, cmp)));
        }
    }
    if diff_args.is_some() {
        // `diff` reports without judging: drop nothing, but exit 0.
        rep.top.truncate(a.top);
    }
    let json_to_stdout = a.json.as_deref() == Some(Path::new("-"));
    if !json_to_stdout {
        let mut out = std::io::stdout().lock();
        out.write_all(report::terminal(&rep, use_color()).as_bytes())?;
        out.write_all(stacks_text.as_bytes())?;
        out.flush()?;
    }
    if let Some(p) = &a.json {
        write_file(p, &report::json(&rep), "--json")?;
    }
    if let Some(p) = &a.markdown {
        write_file(p, &report::markdown(&rep), "--markdown")?;
    }
    if let Some(p) = &a.junit {
        write_file(p, &report::junit(&rep), "--junit")?;
    }
    if let Some(p) = &a.html {
        write_file(p, &report::html(&rep, tree.as_ref()), "--html")?;
    }
    Ok(if diff_args.is_some() {
        0
    } else {
        rep.verdict.exit_code()
    })
}

fn run(cli: Cli) -> Result<i32> {
    match cli.cmd {
        Cmd::Gate(g) => run_compare(&g.common, g.budgets.as_deref(), None),
        Cmd::Diff(d) => run_compare(&d.common, None, Some(&d)),
        Cmd::Top(a) => input_cmds::run_top(&a),
        Cmd::Merge(a) => input_cmds::run_merge(&a),
        Cmd::Convert(a) => input_cmds::run_convert(&a),
        Cmd::Flamegraph(a) => input_cmds::run_flamegraph(&a),
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn main() -> ExitCode {
    keep_freed_memory();
    #[cfg(target_os = "linux")]
    pages::no_huge_pages();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("profdiff: {e:#}");
            ExitCode::from(2)
        }
    }
}
