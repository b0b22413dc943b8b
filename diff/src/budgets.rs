//! Budgets: the rules a gate enforces, read from TOML.
//!
//! ```toml
//! [settings]
//! alpha = 0.01                  # FDR level for "significant"
//! noise_floor_percent = 0.5     # functions below this share on both sides are not tested
//! default_rule = true           # also apply the built-in share-growth rule
//!
//! [[rule]]
//! name = "reconcile-share"
//! kind = "relative"             # relative | absolute | stack | quantile
//! function = 'Reconcile$'       # regex on normalized function names
//! metric = "cum"                # flat | cum
//! max_growth_points = 2.0       # share may grow at most 2 points...
//! max_growth_percent = 10.0     # ...or 10% of its own value
//! severity = "fail"             # fail | warn
//!
//! [[rule]]
//! name = "cpu-per-reconcile"
//! kind = "absolute"
//! function = 'Reconcile$'
//! per = "reconciles"            # second | run | <counter sample type>
//! max = "2ms"
//!
//! [[rule]]
//! name = "no-list-in-reconcile"
//! kind = "stack"
//! caller = 'Reconcile$'
//! callee = 'rest\.\(\*Request\)\.Do$'
//!
//! [[rule]]
//! name = "reconcile-p99"
//! kind = "quantile"             # on latency profiles (profiler --profile latency)
//! function = '\.Reconcile$'     # the measured function
//! quantile = "p99"              # or 0.99
//! max = "10s"                   # ceiling on the candidate's quantile...
//! max_growth_percent = 20.0     # ...and/or growth over the baseline's
//! min_calls = 20                # fewer calls on a side: inconclusive
//!
//! [[allow]]
//! function = 'json\.Marshal'
//! reason = "new status serialization, expected"
//! ```
//!
//! Every error names the file and the line (from the TOML spans).

use std::path::Path;

use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

use crate::normalize::Scale;

/// Errors reading a budgets file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetError {
    /// The file could not be read.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// The file is invalid; names the line.
    #[error("{path}:{line}: {msg}")]
    Invalid {
        /// File path.
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        msg: String,
    },
}

/// Severity of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// A breach fails the gate.
    Fail,
    /// A breach is reported only.
    Warn,
}

/// Which per-function value a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricKind {
    /// Self value.
    Flat,
    /// Cumulative value.
    Cum,
}

/// What a rule checks.
#[derive(Debug, Clone)]
pub enum RuleKind {
    /// Share growth limits for each matching function (or their sum).
    Relative {
        /// Function regex.
        function: Regex,
        /// Flat or cum.
        metric: MetricKind,
        /// Allowed growth in share points (percent of total).
        max_points: Option<f64>,
        /// Allowed growth in percent of the function's own value.
        max_percent: Option<f64>,
        /// Test the sum of matching functions as one entity.
        aggregate: bool,
    },
    /// A ceiling on a value (total or matching functions' cum), scaled.
    Absolute {
        /// Function regex (None: the profile total).
        function: Option<Regex>,
        /// Flat or cum.
        metric: MetricKind,
        /// Scaling (per second, per unit of work, per run, share).
        scale: Scale,
        /// Ceiling in display units (share as a fraction).
        max: f64,
    },
    /// No (or at most `max_percent`) samples where a frame matching `caller`
    /// has a frame matching `callee` below it.
    Stack {
        /// Caller regex.
        caller: Regex,
        /// Callee regex.
        callee: Regex,
        /// Ceiling as a fraction of the total (0: no sample at all).
        max: f64,
    },
    /// A latency quantile of each matching function (latency profiles,
    /// see [`crate::quantile`]): at most `max` ns, and/or at most
    /// `max_percent` above the baseline's.
    Quantile {
        /// Function regex (the measured, leaf function).
        function: Regex,
        /// The quantile, in (0, 1].
        q: f64,
        /// Ceiling in ns.
        max: Option<f64>,
        /// Allowed growth over the baseline, percent.
        max_percent: Option<f64>,
        /// Fewer calls than this on a side: inconclusive.
        min_calls: u64,
    },
}

/// One validated rule.
#[derive(Debug, Clone)]
pub struct BudgetRule {
    /// Name (defaults to `<kind>-<index>`).
    pub name: String,
    /// Sample type (None: the gate's).
    pub sample_type: Option<String>,
    /// Severity.
    pub severity: Severity,
    /// The check.
    pub kind: RuleKind,
    /// Functions exempted from this rule.
    pub allow: Vec<Regex>,
    /// Line in the budgets file (0 for built-in rules).
    pub line: usize,
}

impl BudgetRule {
    /// One-line description for reports.
    pub fn describe(&self) -> String {
        match &self.kind {
            RuleKind::Relative {
                function,
                metric,
                max_points,
                max_percent,
                aggregate,
            } => {
                let mut lim = Vec::new();
                if let Some(p) = max_points {
                    lim.push(format!("{p} points"));
                }
                if let Some(p) = max_percent {
                    lim.push(format!("{p}%"));
                }
                format!(
                    "{}{} share of /{}/ may grow by at most {}",
                    if *aggregate { "summed " } else { "" },
                    match metric {
                        MetricKind::Flat => "flat",
                        MetricKind::Cum => "cum",
                    },
                    function.as_str(),
                    lim.join(" or ")
                )
            }
            RuleKind::Absolute {
                function,
                metric,
                scale,
                max,
            } => format!(
                "{} {} ({scale}) <= {max}",
                match function {
                    Some(f) => format!("/{}/", f.as_str()),
                    None => "total".into(),
                },
                match metric {
                    MetricKind::Flat => "flat",
                    MetricKind::Cum => "cum",
                }
            ),
            RuleKind::Stack {
                caller,
                callee,
                max,
            } => format!(
                "share of samples with /{}/ under /{}/ <= {}%",
                callee.as_str(),
                caller.as_str(),
                max * 100.0
            ),
            RuleKind::Quantile {
                function,
                q,
                max,
                max_percent,
                ..
            } => {
                let mut lim = Vec::new();
                if let Some(m) = max {
                    lim.push(format!("<= {}", crate::quantile::fmt_ns(*m)));
                }
                if let Some(p) = max_percent {
                    lim.push(format!("grows by at most {p}%"));
                }
                format!(
                    "latency {} of /{}/ {}",
                    crate::quantile::quantile_name(*q),
                    function.as_str(),
                    lim.join(" and ")
                )
            }
        }
    }
}

/// Global allow-list entry.
#[derive(Debug, Clone)]
pub struct Allow {
    /// Function regex.
    pub function: Regex,
    /// Only for this rule (None: every rule).
    pub rule: Option<String>,
    /// Why the change is expected.
    pub reason: String,
}

/// Settings that apply to the whole gate.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// FDR level for "significant" (fail/improved).
    pub alpha: f64,
    /// FDR level below which a breach that misses `alpha` is "inconclusive".
    pub inconclusive_alpha: f64,
    /// Noise floor as a fraction of the total.
    pub noise_floor: f64,
    /// Whether the built-in share-growth rule applies too.
    pub default_rule: bool,
    /// Default sample type for rules.
    pub sample_type: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            alpha: 0.01,
            inconclusive_alpha: 0.05,
            noise_floor: 0.005,
            default_rule: true,
            sample_type: None,
        }
    }
}

/// A validated budgets file.
#[derive(Debug, Clone, Default)]
pub struct Budgets {
    /// Global settings.
    pub settings: Settings,
    /// Rules in file order.
    pub rules: Vec<BudgetRule>,
    /// Global allow-list.
    pub allow: Vec<Allow>,
}

/// Name of the built-in cumulative rule ([`default_cum_rule`]).
pub const DEFAULT_CUM_RULE: &str = "default-cum-growth";

/// The built-in inclusive rule: every function's cumulative value may grow
/// by at most `max_percent` of its own value (significance decides). Its
/// findings are attributed to culprits by the gate.
pub fn default_cum_rule(max_percent: f64) -> BudgetRule {
    BudgetRule {
        name: DEFAULT_CUM_RULE.into(),
        sample_type: None,
        severity: Severity::Fail,
        kind: RuleKind::Relative {
            function: Regex::new(".").expect("regex"),
            metric: MetricKind::Cum,
            max_points: None,
            max_percent: Some(max_percent),
            aggregate: false,
        },
        allow: Vec::new(),
        line: 0,
    }
}

/// The default gate rule: no function's flat share may grow significantly
/// by more than `max_percent` percent of its own value.
pub fn default_rule(max_percent: f64) -> BudgetRule {
    BudgetRule {
        name: "default-share-growth".into(),
        sample_type: None,
        severity: Severity::Fail,
        kind: RuleKind::Relative {
            function: Regex::new(".").expect("regex"),
            metric: MetricKind::Flat,
            max_points: None,
            max_percent: Some(max_percent),
            aggregate: false,
        },
        allow: Vec::new(),
        line: 0,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    settings: Option<Spanned<RawSettings>>,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
    #[serde(default)]
    allow: Vec<Spanned<RawAllow>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    alpha: Option<f64>,
    inconclusive_alpha: Option<f64>,
    noise_floor_percent: Option<f64>,
    default_rule: Option<bool>,
    sample_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    kind: Spanned<String>,
    severity: Option<Spanned<String>>,
    sample_type: Option<String>,
    function: Option<Spanned<String>>,
    metric: Option<Spanned<String>>,
    max_growth_points: Option<f64>,
    max_growth_percent: Option<f64>,
    aggregate: Option<bool>,
    per: Option<Spanned<String>>,
    max: Option<Spanned<toml::Value>>,
    caller: Option<Spanned<String>>,
    callee: Option<Spanned<String>>,
    max_percent: Option<f64>,
    allow: Option<Vec<Spanned<String>>>,
    quantile: Option<Spanned<toml::Value>>,
    min_calls: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAllow {
    function: Spanned<String>,
    rule: Option<String>,
    reason: Option<String>,
}

/// Parse a number with an optional unit suffix: `2ms`, `1.5s`, `512KiB`, `3`.
/// Durations convert to nanoseconds, sizes to bytes.
pub fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+' || c == 'e'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let x: f64 = num.parse().ok()?;
    let f = match unit.trim() {
        "" => 1.0,
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "%" => 0.01,
        _ => return None,
    };
    Some(x * f)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Budgets {
    /// Read and validate a budgets file.
    pub fn load(path: &Path) -> Result<Budgets, BudgetError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| BudgetError::Io(path.display().to_string(), e))?;
        Budgets::parse(&text, &path.display().to_string())
    }

    /// Parse and validate budgets text; `name` is used in errors.
    pub fn parse(text: &str, name: &str) -> Result<Budgets, BudgetError> {
        let err = |off: usize, msg: String| BudgetError::Invalid {
            path: name.to_string(),
            line: line_of(text, off),
            msg,
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let off = e.span().map(|s| s.start).unwrap_or(0);
            err(off, e.message().trim().to_string())
        })?;
        let regex = |s: &Spanned<String>| -> Result<Regex, BudgetError> {
            Regex::new(s.get_ref()).map_err(|e| {
                err(
                    s.span().start,
                    format!("invalid regex {:?}: {e}", s.get_ref()),
                )
            })
        };
        let mut settings = Settings::default();
        if let Some(s) = raw.settings {
            let off = s.span().start;
            let s = s.into_inner();
            if let Some(a) = s.alpha {
                if !(a > 0.0 && a < 1.0) {
                    return Err(err(off, format!("alpha must be in (0, 1), got {a}")));
                }
                settings.alpha = a;
            }
            if let Some(a) = s.inconclusive_alpha {
                if !(a > 0.0 && a < 1.0) {
                    return Err(err(
                        off,
                        format!("inconclusive_alpha must be in (0, 1), got {a}"),
                    ));
                }
                settings.inconclusive_alpha = a;
            }
            if let Some(n) = s.noise_floor_percent {
                if !(0.0..100.0).contains(&n) {
                    return Err(err(
                        off,
                        format!("noise_floor_percent must be in [0, 100), got {n}"),
                    ));
                }
                settings.noise_floor = n / 100.0;
            }
            if let Some(d) = s.default_rule {
                settings.default_rule = d;
            }
            settings.sample_type = s.sample_type;
        }
        let mut rules = Vec::new();
        for (i, r) in raw.rule.into_iter().enumerate() {
            let off = r.span().start;
            let r = r.into_inner();
            let kind_name = r.kind.get_ref().as_str();
            let severity = match r.severity.as_ref().map(|s| s.get_ref().as_str()) {
                None | Some("fail") => Severity::Fail,
                Some("warn") => Severity::Warn,
                Some(other) => {
                    let s = r.severity.as_ref().map(|s| s.span().start).unwrap_or(off);
                    return Err(err(
                        s,
                        format!("severity must be \"fail\" or \"warn\", got {other:?}"),
                    ));
                }
            };
            let metric = |default: MetricKind| -> Result<MetricKind, BudgetError> {
                match r.metric.as_ref().map(|m| m.get_ref().as_str()) {
                    None => Ok(default),
                    Some("flat") => Ok(MetricKind::Flat),
                    Some("cum") => Ok(MetricKind::Cum),
                    Some(other) => Err(err(
                        r.metric.as_ref().map(|m| m.span().start).unwrap_or(off),
                        format!("metric must be \"flat\" or \"cum\", got {other:?}"),
                    )),
                }
            };
            let forbid = |present: bool, field: &str| -> Result<(), BudgetError> {
                if present {
                    Err(err(
                        off,
                        format!("field {field:?} does not apply to a {kind_name} rule"),
                    ))
                } else {
                    Ok(())
                }
            };
            let kind = match kind_name {
                "relative" => {
                    forbid(r.per.is_some(), "per")?;
                    forbid(r.max.is_some(), "max")?;
                    forbid(r.caller.is_some() || r.callee.is_some(), "caller/callee")?;
                    let function = match &r.function {
                        Some(f) => regex(f)?,
                        None => return Err(err(off, "relative rule needs `function`".into())),
                    };
                    if r.max_growth_points.is_none() && r.max_growth_percent.is_none() {
                        return Err(err(
                            off,
                            "relative rule needs max_growth_points and/or max_growth_percent"
                                .into(),
                        ));
                    }
                    RuleKind::Relative {
                        function,
                        metric: metric(MetricKind::Flat)?,
                        max_points: r.max_growth_points,
                        max_percent: r.max_growth_percent,
                        aggregate: r.aggregate.unwrap_or(false),
                    }
                }
                "absolute" => {
                    forbid(r.caller.is_some() || r.callee.is_some(), "caller/callee")?;
                    forbid(
                        r.max_growth_points.is_some() || r.max_growth_percent.is_some(),
                        "max_growth_*",
                    )?;
                    let max = match &r.max {
                        None => return Err(err(off, "absolute rule needs `max`".into())),
                        Some(m) => {
                            let v = match m.get_ref() {
                                toml::Value::Integer(i) => Some(*i as f64),
                                toml::Value::Float(f) => Some(*f),
                                toml::Value::String(s) => parse_quantity(s),
                                _ => None,
                            };
                            match v {
                                Some(v) if v >= 0.0 => v,
                                _ => {
                                    return Err(err(
                                        m.span().start,
                                        "max must be a non-negative number or a quantity like \"2ms\", \"10MiB\", \"5%\"".into(),
                                    ))
                                }
                            }
                        }
                    };
                    let scale = match r.per.as_ref().map(|p| p.get_ref().as_str()) {
                        None | Some("second") => Scale::Rate,
                        Some("run") => Scale::PerUnit(1.0),
                        Some("share") | Some("total") => Scale::Share,
                        Some(t) => Scale::PerSampleType(t.to_string()),
                    };
                    RuleKind::Absolute {
                        function: r.function.as_ref().map(regex).transpose()?,
                        metric: metric(MetricKind::Cum)?,
                        scale,
                        max,
                    }
                }
                "stack" => {
                    forbid(r.max.is_some(), "max")?;
                    forbid(r.function.is_some(), "function")?;
                    let (Some(caller), Some(callee)) = (&r.caller, &r.callee) else {
                        return Err(err(off, "stack rule needs `caller` and `callee`".into()));
                    };
                    let max = r.max_percent.unwrap_or(0.0);
                    if !(0.0..=100.0).contains(&max) {
                        return Err(err(
                            off,
                            format!("max_percent must be in [0, 100], got {max}"),
                        ));
                    }
                    RuleKind::Stack {
                        caller: regex(caller)?,
                        callee: regex(callee)?,
                        max: max / 100.0,
                    }
                }
                "quantile" => {
                    forbid(r.per.is_some(), "per")?;
                    forbid(r.caller.is_some() || r.callee.is_some(), "caller/callee")?;
                    forbid(r.max_growth_points.is_some(), "max_growth_points")?;
                    forbid(r.metric.is_some(), "metric")?;
                    forbid(r.aggregate.is_some(), "aggregate")?;
                    let function = match &r.function {
                        Some(f) => regex(f)?,
                        None => return Err(err(off, "quantile rule needs `function`".into())),
                    };
                    let q = match &r.quantile {
                        None => return Err(err(off, "quantile rule needs `quantile` (e.g. \"p99\" or 0.99)".into())),
                        Some(v) => crate::quantile::parse_quantile(v.get_ref()).ok_or_else(|| {
                            err(
                                v.span().start,
                                "quantile must be in (0, 1] or like \"p99\", \"p99.9\", \"99%\"".into(),
                            )
                        })?,
                    };
                    let max = match &r.max {
                        None => None,
                        Some(m) => {
                            let v = match m.get_ref() {
                                toml::Value::Integer(i) => Some(*i as f64),
                                toml::Value::Float(f) => Some(*f),
                                toml::Value::String(s) => parse_quantity(s),
                                _ => None,
                            };
                            match v {
                                Some(v) if v >= 0.0 => Some(v),
                                _ => {
                                    return Err(err(
                                        m.span().start,
                                        "max must be a duration like \"10s\", \"250ms\" (or ns)".into(),
                                    ))
                                }
                            }
                        }
                    };
                    if max.is_none() && r.max_growth_percent.is_none() {
                        return Err(err(
                            off,
                            "quantile rule needs max and/or max_growth_percent".into(),
                        ));
                    }
                    RuleKind::Quantile {
                        function,
                        q,
                        max,
                        max_percent: r.max_growth_percent,
                        min_calls: r.min_calls.unwrap_or(20),
                    }
                }
                other => {
                    return Err(err(
                        r.kind.span().start,
                        format!(
                            "kind must be \"relative\", \"absolute\", \"stack\" or \"quantile\", got {other:?}"
                        ),
                    ))
                }
            };
            if !matches!(kind, RuleKind::Quantile { .. })
                && (r.quantile.is_some() || r.min_calls.is_some())
            {
                return Err(err(
                    off,
                    format!("fields \"quantile\"/\"min_calls\" do not apply to a {kind_name} rule"),
                ));
            }
            if !matches!(kind, RuleKind::Stack { .. }) && r.max_percent.is_some() {
                return Err(err(
                    off,
                    format!("field \"max_percent\" does not apply to a {kind_name} rule"),
                ));
            }
            let allow = r
                .allow
                .as_ref()
                .map(|v| v.iter().map(regex).collect::<Result<Vec<_>, _>>())
                .transpose()?
                .unwrap_or_default();
            rules.push(BudgetRule {
                name: r.name.unwrap_or_else(|| format!("{kind_name}-{}", i + 1)),
                sample_type: r.sample_type.or_else(|| settings.sample_type.clone()),
                severity,
                kind,
                allow,
                line: line_of(text, off),
            });
        }
        let mut names = std::collections::HashSet::new();
        for r in &rules {
            if !names.insert(r.name.clone()) {
                return Err(BudgetError::Invalid {
                    path: name.to_string(),
                    line: r.line,
                    msg: format!("duplicate rule name {:?}", r.name),
                });
            }
        }
        let mut allow = Vec::new();
        for a in raw.allow {
            let a = a.into_inner();
            allow.push(Allow {
                function: regex(&a.function)?,
                rule: a.rule,
                reason: a.reason.unwrap_or_default(),
            });
        }
        Ok(Budgets {
            settings,
            rules,
            allow,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_rule_kind() {
        let b = Budgets::parse(
            r#"
[settings]
alpha = 0.02
noise_floor_percent = 1

[[rule]]
name = "r"
kind = "relative"
function = "Reconcile"
max_growth_points = 1.5

[[rule]]
kind = "absolute"
per = "reconciles"
max = "2ms"

[[rule]]
kind = "stack"
caller = "Reconcile"
callee = "Do$"
severity = "warn"

[[allow]]
function = "json"
reason = "expected"
"#,
            "b.toml",
        )
        .unwrap();
        assert_eq!(b.settings.alpha, 0.02);
        assert_eq!(b.settings.noise_floor, 0.01);
        assert_eq!(b.rules.len(), 3);
        assert_eq!(b.rules[1].name, "absolute-2");
        match &b.rules[1].kind {
            RuleKind::Absolute { max, scale, .. } => {
                assert_eq!(*max, 2e6);
                assert_eq!(*scale, Scale::PerSampleType("reconciles".into()));
            }
            _ => panic!("wrong kind"),
        }
        assert_eq!(b.rules[2].severity, Severity::Warn);
        assert_eq!(b.rules[2].line, 17);
        assert_eq!(b.allow.len(), 1);
    }

    #[test]
    fn errors_name_the_line() {
        let e = Budgets::parse(
            "[[rule]]\nkind = \"relative\"\nfunction = \"(\"\nmax_growth_points = 1\n",
            "x.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("x.toml:3: invalid regex"), "{e}");
        let e = Budgets::parse("\n\n[[rule]]\nkind = \"bogus\"\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("x.toml:4: kind must be"), "{e}");
        let e = Budgets::parse(
            "[[rule]]\nkind = \"stack\"\ncaller=\"a\"\ncallee=\"b\"\nwhat = 1\n",
            "x.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("x.toml:") && e.contains("what"), "{e}");
        let e = Budgets::parse(
            "[[rule]]\nkind = \"absolute\"\nmax = \"2 parsecs\"\n",
            "x.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("x.toml:3: max must be"), "{e}");
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("2ms"), Some(2e6));
        assert_eq!(parse_quantity("1.5 s"), Some(1.5e9));
        assert_eq!(parse_quantity("10MiB"), Some(10.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("5%"), Some(0.05));
        assert_eq!(parse_quantity("0"), Some(0.0));
        assert_eq!(parse_quantity("x"), None);
    }
}
