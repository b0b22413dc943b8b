//! The `profdiff` command line: clap definitions only (feature `cli`).
//!
//! The `profdiff` binary parses [`Cli`] and runs it; tools that check
//! scripts or manifests against the real flags (the `deploy` crate's tests)
//! read the same definitions through [`clap::CommandFactory`]:
//!
//! ```
//! use clap::CommandFactory as _;
//! let cmd = diff::cli::Cli::command();
//! let gate = cmd.find_subcommand("gate").unwrap();
//! assert!(gate.get_arguments().any(|a| a.get_long() == Some("budgets")));
//! ```
//!
//! This module, and with it clap, exists only with the `cli` feature (on by
//! default, for the binary); library users who only compare profiles take
//! `diff` with `default-features = false`.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `profdiff`'s arguments.
#[derive(Parser, Debug)]
#[command(
    name = "profdiff",
    version,
    about = "Compare pprof profiles and gate CI on performance budgets",
    long_about = None,
    after_help = "Exit codes: 0 pass, 1 regression, 2 usage or input error, 3 inconclusive.\n\nExamples:\n  profdiff gate -b base/ -c cand/ --budgets budgets/go-controller.toml --markdown pr.md\n  profdiff diff -b old.pb.gz -c new.pb.gz --normalize rate\n  profdiff top cpu.pb.gz"
)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// `profdiff`'s subcommands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
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
    Top(TopArgs),
    /// Merge profiles into one.
    #[command(
        after_help = "Examples:\n  profdiff merge -o all.pb.gz run1.pb.gz run2.pb.gz run3.pb.gz\n  profdiff merge -o all.folded --to folded runs/"
    )]
    Merge(MergeArgs),
    /// Convert between profile formats.
    #[command(
        after_help = "Examples:\n  profdiff convert -o cpu.folded --to folded cpu.pb.gz\n  profdiff convert -o cpu.pb.gz stacks.folded"
    )]
    Convert(ConvertArgs),
    /// Write a flame graph of one profile.
    #[command(
        after_help = "Examples:\n  profdiff flamegraph -o cpu.svg cpu.pb.gz\n  profdiff flamegraph -s alloc_space --title heap -o heap.svg heap.pb.gz"
    )]
    Flamegraph(FlamegraphArgs),
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

/// `--normalize`: the scale values are compared on.
#[derive(Copy, Clone, PartialEq, Eq, Debug, ValueEnum)]
pub enum ScaleArg {
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

/// `--flamegraph-color`: what a differential flame graph's colours show.
#[derive(Copy, Clone, PartialEq, Eq, Debug, ValueEnum)]
pub enum ColorArg {
    /// Change of the frame's inclusive value.
    Inclusive,
    /// Change of the frame's self value.
    #[value(name = "self")]
    SelfValue,
}

/// Flags shared by `gate` and `diff`.
#[derive(Args, Debug)]
pub struct CommonArgs {
    /// Baseline profiles (files or directories).
    #[arg(short = 'b', long, num_args = 1.., required = true)]
    pub baseline: Vec<PathBuf>,
    /// Candidate profiles (files or directories).
    #[arg(short = 'c', long, num_args = 1.., required = true)]
    pub candidate: Vec<PathBuf>,
    /// Sample type to compare (e.g. `cpu`, `alloc_space`); default: the profile's default.
    #[arg(long)]
    pub sample_type: Option<String>,
    /// Switch off a normalization rule (repeatable; `all` for every rule):
    /// go-closure, go-generic, go-wrapper, rust-hash, vendor, module-version, hex-address, root-noise, go-preempt.
    #[arg(long = "no-normalize", value_name = "RULE")]
    pub no_normalize: Vec<String>,
    /// Drop kernel frames.
    #[arg(long)]
    pub no_kernel: bool,
    /// Rewrite function names: `REGEX=>REPLACEMENT` (repeatable, applied in order).
    #[arg(long, value_name = "REGEX=>REPLACEMENT")]
    pub rewrite: Vec<String>,
    /// Keep only samples with a frame matching REGEX.
    #[arg(long, value_name = "REGEX")]
    pub focus: Option<String>,
    /// Drop samples with a frame matching REGEX.
    #[arg(long, value_name = "REGEX")]
    pub ignore: Option<String>,
    /// Drop callees of the leaf-most frame matching REGEX.
    #[arg(long, value_name = "REGEX")]
    pub prune: Option<String>,
    /// Scale of values: compositional (default), share, or rate (`diff` only).
    #[arg(long = "normalize", value_enum, default_value = "compositional")]
    pub scale: ScaleArg,
    /// Significance level (Benjamini-Hochberg FDR).
    #[arg(long, default_value_t = 0.01)]
    pub alpha: f64,
    /// Functions below this share (percent) on both sides are not tested.
    #[arg(long, default_value_t = 0.5, value_name = "PERCENT")]
    pub noise_floor: f64,
    /// Default rules: allowed growth of a function's flat and cumulative value, percent of its own value.
    #[arg(long, default_value_t = 5.0, value_name = "PERCENT")]
    pub max_growth: f64,
    /// Functions listed in the top-changes table.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Write the JSON report to OUT (`-`: stdout instead of the table).
    #[arg(long, value_name = "OUT")]
    pub json: Option<PathBuf>,
    /// Write a Markdown report (for a PR comment) to OUT.
    #[arg(long, value_name = "OUT")]
    pub markdown: Option<PathBuf>,
    /// Write a JUnit XML report (one test case per rule) to OUT.
    #[arg(long, value_name = "OUT")]
    pub junit: Option<PathBuf>,
    /// Write a differential flame graph (width = candidate) to OUT.svg.
    #[arg(long, value_name = "OUT.svg")]
    pub flamegraph: Option<PathBuf>,
    /// Write the baseline-width differential flame graph (vanished frames visible) to OUT.svg.
    #[arg(long, value_name = "OUT.svg")]
    pub flamegraph_base_width: Option<PathBuf>,
    /// What flame graph colours show: the significant change of each frame's
    /// inclusive value (default) or of its self value.
    #[arg(long, value_enum, default_value = "inclusive", value_name = "WHAT")]
    pub flamegraph_color: ColorArg,
    /// Colour by inclusive change (the default now; kept for old scripts).
    #[arg(long, hide = true)]
    pub flamegraph_cum: bool,
    /// Write a self-contained HTML report (interactive diff flame graph) to OUT.html.
    #[arg(long, value_name = "OUT.html")]
    pub html: Option<PathBuf>,
}

/// `profdiff gate`: compare against budgets and judge.
#[derive(Args, Debug)]
pub struct GateArgs {
    /// Flags shared with `diff`.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Budgets file (TOML); see budgets/example.toml.
    #[arg(long, value_name = "FILE")]
    pub budgets: Option<PathBuf>,
}

/// `profdiff diff`: compare and print the changes without judging.
#[derive(Args, Debug)]
pub struct DiffArgs {
    /// Flags shared with `gate`.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Divide values by N units of work per profile.
    #[arg(long, value_name = "N", conflicts_with = "per_sample_type")]
    pub per: Option<f64>,
    /// Divide values by the total of a counter sample type (e.g. `reconciles`).
    #[arg(long, value_name = "NAME")]
    pub per_sample_type: Option<String>,
    /// Also print the N stacks that changed most.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub stacks: usize,
}

/// `profdiff top`: the functions with the largest values, like `go tool pprof -top`.
#[derive(Args, Debug, Clone)]
pub struct TopArgs {
    /// Profile file (pprof, gzip'd or not; legacy pprof formats; folded stacks).
    pub file: PathBuf,
    /// Sample type: a name (`cpu`, `alloc_space`), `type/unit` or an index.
    /// Default: the profile's default sample type, else the last one.
    #[arg(long, short = 's')]
    pub sample_type: Option<String>,
    /// Sort by cumulative value instead of flat value.
    #[arg(long)]
    pub cum: bool,
    /// Show only the first N rows (default: all).
    #[arg(short = 'n', long = "nodes")]
    pub n: Option<usize>,
    /// Drop rows whose cumulative value is below this fraction of the total
    /// (pprof's `-nodefraction`).
    #[arg(long, default_value_t = crate::top::DEFAULT_NODE_FRACTION)]
    pub node_fraction: f64,
}

/// Output encoding of `merge` and `convert`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// gzip'd pprof protobuf.
    Pprof,
    /// Folded stacks (`a;b;c 12`), one sample type.
    Folded,
}

/// The output flags `merge` and `convert` share.
#[derive(Args, Debug, Clone)]
pub struct OutputArgs {
    /// Output file.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    /// Output format (default: folded for `.folded`, `.collapsed` or `.txt`
    /// outputs, pprof otherwise).
    #[arg(long = "to")]
    pub to: Option<OutputFormat>,
    /// Sample type written when the output is folded (default as for `top`).
    #[arg(long, short = 's')]
    pub sample_type: Option<String>,
}

impl OutputArgs {
    /// The format to write: `--to`, else chosen by the output's extension
    /// (folded for `.folded`, `.collapsed` and `.txt`, pprof otherwise).
    pub fn format(&self) -> OutputFormat {
        self.to
            .unwrap_or_else(|| OutputFormat::for_path(&self.output))
    }
}

impl OutputFormat {
    /// The format an output file's name asks for: folded for `.folded`,
    /// `.collapsed` and `.txt` (any case), pprof otherwise.
    pub fn for_path(out: &Path) -> OutputFormat {
        let name = out.to_string_lossy().to_ascii_lowercase();
        if [".folded", ".collapsed", ".txt"]
            .iter()
            .any(|e| name.ends_with(e))
        {
            OutputFormat::Folded
        } else {
            OutputFormat::Pprof
        }
    }
}

/// `profdiff merge`: add several profiles into one.
#[derive(Args, Debug, Clone)]
pub struct MergeArgs {
    /// Profile files or directories (scanned recursively, sorted). All must
    /// have the same sample types.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Where and how to write the merged profile.
    #[command(flatten)]
    pub out: OutputArgs,
}

/// `profdiff convert`: pprof <-> folded stacks (and legacy formats to either).
#[derive(Args, Debug, Clone)]
pub struct ConvertArgs {
    /// Input profile.
    pub input: PathBuf,
    /// Where and how to write the converted profile.
    #[command(flatten)]
    pub out: OutputArgs,
}

/// `profdiff flamegraph`: a plain (non-differential) flame graph SVG.
#[derive(Args, Debug, Clone)]
pub struct FlamegraphArgs {
    /// Profile file.
    pub file: PathBuf,
    /// Output SVG file.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    /// Sample type (default as for `top`).
    #[arg(long, short = 's')]
    pub sample_type: Option<String>,
    /// Title (default: the file name and sample type).
    #[arg(long)]
    pub title: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn output_format_from_flag_or_extension() {
        let out = |output: &str, to| OutputArgs {
            output: output.into(),
            to,
            sample_type: None,
        };
        assert_eq!(out("a.FOLDED", None).format(), OutputFormat::Folded);
        assert_eq!(out("a.collapsed", None).format(), OutputFormat::Folded);
        assert_eq!(out("a.txt", None).format(), OutputFormat::Folded);
        assert_eq!(out("a.pb.gz", None).format(), OutputFormat::Pprof);
        assert_eq!(
            out("a.txt", Some(OutputFormat::Pprof)).format(),
            OutputFormat::Pprof
        );
    }

    #[test]
    fn merge_and_convert_share_the_output_flags() {
        let cli = Cli::try_parse_from(["profdiff", "merge", "-o", "m.txt", "-s", "cpu", "a", "b"])
            .unwrap();
        let Cmd::Merge(m) = cli.cmd else {
            panic!("not merge")
        };
        assert_eq!(m.files.len(), 2);
        assert_eq!(m.out.format(), OutputFormat::Folded);
        assert_eq!(m.out.sample_type.as_deref(), Some("cpu"));
        let cli =
            Cli::try_parse_from(["profdiff", "convert", "x", "--output", "y", "--to", "pprof"])
                .unwrap();
        let Cmd::Convert(c) = cli.cmd else {
            panic!("not convert")
        };
        assert_eq!(c.out.format(), OutputFormat::Pprof);
        assert_eq!(c.out.output, Path::new("y"));
    }
}
