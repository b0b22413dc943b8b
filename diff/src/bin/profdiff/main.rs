//! `profdiff`: compare pprof profiles and gate on budgets.
//!
//! Exit codes: 0 pass (or improved; `diff` always 0), 1 regression,
//! 2 usage or input error, 3 inconclusive. Errors are one line:
//! `profdiff: <error chain>`. A closed stdout (broken pipe) exits 0.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use diff::budgets::Budgets;
use diff::diffgraph::{self, ColorBy, DiffGraphOptions, FrameTree};
use diff::gate::{Gate, GateReport};
use diff::normalize::{NormalizeOptions, Normalizer, Rewrite, Rule, Scale};
use diff::{report, Profile};

mod input_cmds;

#[derive(Parser)]
#[command(
    name = "profdiff",
    version,
    about = "Compare pprof profiles and gate CI on performance budgets",
    after_help = "Exit codes: 0 pass, 1 regression, 2 usage or input error, 3 inconclusive.\n\nExamples:\n  profdiff gate -b base/ -c cand/ --budgets budgets/go-controller.toml --markdown pr.md\n  profdiff diff -b old.pb.gz -c new.pb.gz --normalize rate\n  profdiff top cpu.pb.gz"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Compare baseline and candidate profiles against budgets; exit 1 on regression.
    #[command(after_help = GATE_HELP)]
    Gate(GateArgs),
    /// Compare baseline and candidate profiles and print the changes (exit 0 unless error).
    #[command(after_help = DIFF_HELP)]
    Diff(DiffArgs),
    /// Print the top functions of a profile.
    #[command(
        after_help = "Examples:\n  profdiff top cpu.pb.gz\n  profdiff top --cum -n 20 cpu.pb.gz\n  profdiff top -s alloc_space heap.pb.gz"
    )]
    Top(input_cmds::TopArgs),
    /// Merge profiles into one.
    #[command(
        after_help = "Examples:\n  profdiff merge -o all.pb.gz run1.pb.gz run2.pb.gz run3.pb.gz\n  profdiff merge -o all.folded --to folded runs/"
    )]
    Merge(input_cmds::MergeArgs),
    /// Convert between profile formats.
    #[command(
        after_help = "Examples:\n  profdiff convert -o cpu.folded --to folded cpu.pb.gz\n  profdiff convert -o cpu.pb.gz stacks.folded"
    )]
    Convert(input_cmds::ConvertArgs),
    /// Write a flame graph of one profile.
    #[command(
        after_help = "Examples:\n  profdiff flamegraph -o cpu.svg cpu.pb.gz\n  profdiff flamegraph -s alloc_space --title heap -o heap.svg heap.pb.gz"
    )]
    Flamegraph(input_cmds::FlamegraphArgs),
}

const GATE_HELP: &str =
    "Exit codes: 0 pass or improved, 1 regression, 2 usage or input error, 3 inconclusive.

Without --budgets, the default rule applies: no function's flat share may grow
by more than --max-growth percent (default 5) of its own value, significantly
(Benjamini-Hochberg q < --alpha).

Examples:
  # five runs per side, default rule, Markdown for the PR and JUnit for CI
  profdiff gate -b runs/main/ -c runs/pr/ --markdown pr.md --junit junit.xml
  # budgets for a Go controller, HTML report with both flame graphs
  profdiff gate -b base.pb.gz -c cand.pb.gz --budgets budgets/go-controller.toml --html report.html
  # JSON on stdout instead of the table
  profdiff gate -b a.pb.gz -c b.pb.gz --json -";

const DIFF_HELP: &str = "Examples:
  profdiff diff -b old.pb.gz -c new.pb.gz
  profdiff diff -b old/ -c new/ --normalize rate --stacks 10
  profdiff diff -b a.pb.gz -c b.pb.gz --per-sample-type reconciles --sample-type cpu
  profdiff diff -b a.pb.gz -c b.pb.gz --no-normalize go-closure --rewrite 'v2\\.=>'";

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
enum ScaleArg {
    /// Share of the baseline's total per unit of work, the candidate's
    /// total rescaled by a size factor estimated from the functions that
    /// did not change: unchanged functions stay unchanged.
    #[value(alias = "robust")]
    Compositional,
    /// Fraction of each profile's own total (zero-sum: when one function
    /// grows, every other share shrinks).
    Share,
    /// Per second of profile duration (`diff` tables only).
    Rate,
}

#[derive(Copy, Clone, ValueEnum)]
enum ColorArg {
    /// Change of the frame's inclusive value.
    Inclusive,
    /// Change of the frame's self value.
    #[value(name = "self")]
    SelfValue,
}

#[derive(Args)]
struct CommonArgs {
    /// Baseline profiles (files or directories).
    #[arg(short = 'b', long, num_args = 1.., required = true)]
    baseline: Vec<PathBuf>,
    /// Candidate profiles (files or directories).
    #[arg(short = 'c', long, num_args = 1.., required = true)]
    candidate: Vec<PathBuf>,
    /// Sample type to compare (e.g. `cpu`, `alloc_space`); default: the profile's default.
    #[arg(long)]
    sample_type: Option<String>,
    /// Switch off a normalization rule (repeatable; `all` for every rule):
    /// go-closure, go-generic, go-wrapper, rust-hash, vendor, module-version, hex-address, root-noise.
    #[arg(long = "no-normalize", value_name = "RULE")]
    no_normalize: Vec<String>,
    /// Drop kernel frames.
    #[arg(long)]
    no_kernel: bool,
    /// Rewrite function names: `REGEX=>REPLACEMENT` (repeatable, applied in order).
    #[arg(long, value_name = "REGEX=>REPLACEMENT")]
    rewrite: Vec<String>,
    /// Keep only samples with a frame matching REGEX.
    #[arg(long, value_name = "REGEX")]
    focus: Option<String>,
    /// Drop samples with a frame matching REGEX.
    #[arg(long, value_name = "REGEX")]
    ignore: Option<String>,
    /// Drop callees of the leaf-most frame matching REGEX.
    #[arg(long, value_name = "REGEX")]
    prune: Option<String>,
    /// Scale of values: compositional (default), share, or rate (`diff` only).
    #[arg(long = "normalize", value_enum, default_value = "compositional")]
    scale: ScaleArg,
    /// Significance level (Benjamini-Hochberg FDR).
    #[arg(long, default_value_t = 0.01)]
    alpha: f64,
    /// Functions below this share (percent) on both sides are not tested.
    #[arg(long, default_value_t = 0.5, value_name = "PERCENT")]
    noise_floor: f64,
    /// Default rules: allowed growth of a function's flat and cumulative value, percent of its own value.
    #[arg(long, default_value_t = 5.0, value_name = "PERCENT")]
    max_growth: f64,
    /// Functions listed in the top-changes table.
    #[arg(long, default_value_t = 20)]
    top: usize,
    /// Write the JSON report to OUT (`-`: stdout instead of the table).
    #[arg(long, value_name = "OUT")]
    json: Option<PathBuf>,
    /// Write a Markdown report (for a PR comment) to OUT.
    #[arg(long, value_name = "OUT")]
    markdown: Option<PathBuf>,
    /// Write a JUnit XML report (one test case per rule) to OUT.
    #[arg(long, value_name = "OUT")]
    junit: Option<PathBuf>,
    /// Write a differential flame graph (width = candidate) to OUT.svg.
    #[arg(long, value_name = "OUT.svg")]
    flamegraph: Option<PathBuf>,
    /// Write the baseline-width differential flame graph (vanished frames visible) to OUT.svg.
    #[arg(long, value_name = "OUT.svg")]
    flamegraph_base_width: Option<PathBuf>,
    /// What flame graph colours show: the significant change of each frame's
    /// inclusive value (default) or of its self value.
    #[arg(long, value_enum, default_value = "inclusive", value_name = "WHAT")]
    flamegraph_color: ColorArg,
    /// Colour by inclusive change (the default now; kept for old scripts).
    #[arg(long, hide = true)]
    flamegraph_cum: bool,
    /// Write a self-contained HTML report (interactive diff flame graph) to OUT.html.
    #[arg(long, value_name = "OUT.html")]
    html: Option<PathBuf>,
}

#[derive(Args)]
struct GateArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Budgets file (TOML); see budgets/example.toml.
    #[arg(long, value_name = "FILE")]
    budgets: Option<PathBuf>,
}

#[derive(Args)]
struct DiffArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Divide values by N units of work per profile.
    #[arg(long, value_name = "N", conflicts_with = "per_sample_type")]
    per: Option<f64>,
    /// Divide values by the total of a counter sample type (e.g. `reconciles`).
    #[arg(long, value_name = "NAME")]
    per_sample_type: Option<String>,
    /// Also print the N stacks that changed most.
    #[arg(long, default_value_t = 0, value_name = "N")]
    stacks: usize,
}

fn normalizer(a: &CommonArgs) -> Result<Normalizer> {
    let mut disabled = Vec::new();
    for n in &a.no_normalize {
        if n == "all" {
            disabled.extend(Rule::ALL);
            continue;
        }
        disabled.push(Rule::from_name(n).with_context(|| {
            format!(
                "--no-normalize: unknown rule {n:?} (known: {}, all)",
                Rule::ALL.map(|r| r.name()).join(", ")
            )
        })?);
    }
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
    // Both sides decode at the same time (errors: the baseline's first).
    let (base, cand) = std::thread::scope(|s| {
        let cand = s.spawn(|| load(&a.candidate, "candidate"));
        let base = load(&a.baseline, "baseline");
        let cand = cand.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        (base, cand)
    });
    // Never freed: the process ends after the reports, and freeing millions
    // of small stacks one by one only costs time.
    let (base, cand) = (
        std::mem::ManuallyDrop::new(base?),
        std::mem::ManuallyDrop::new(cand?),
    );
    let bref: Vec<(String, &Profile)> = base.iter().map(|(n, p)| (n.clone(), p)).collect();
    let cref: Vec<(String, &Profile)> = cand.iter().map(|(n, p)| (n.clone(), p)).collect();
    // Never freed either (its comparison holds one boxed slice per stack).
    let mut gate = std::mem::ManuallyDrop::new(Gate::new(bref, cref, &norm, a.sample_type.clone()));
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
