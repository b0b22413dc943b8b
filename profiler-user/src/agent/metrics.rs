//! A tiny metrics registry rendered in the Prometheus text exposition
//! format 0.0.4 (`GET /metrics`).
//!
//! The agent loop sets absolute values ([`AgentMetrics::set_counter`],
//! [`AgentMetrics::set_gauge`]); [`AgentMetrics::render`] adds the process
//! metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_max_resident_memory_bytes`, from `/proc/self`) and the store's
//! statistics (`profiler_agent_store_*`). Output is sorted by metric name,
//! then by label set, so it is stable.
//!
//! Bounded: at most [`MAX_SERIES`] series; setting a new series beyond that
//! is dropped and counted in `profiler_agent_metrics_dropped_series_total`
//! (as are values whose type contradicts an existing metric of that name).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use super::store::Store;

/// Most series (metric name + label set) the registry holds.
pub const MAX_SERIES: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

#[derive(Debug)]
struct Family {
    help: String,
    kind: Kind,
    series: BTreeMap<Vec<(String, String)>, f64>,
}

#[derive(Debug, Default)]
struct Registry {
    families: BTreeMap<String, Family>,
    series: usize,
    dropped: u64,
}

/// One metric family: its name, kind and help text, defined once in a
/// table (the agent loop's `METRICS`) and set by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDef {
    /// Prometheus name.
    pub name: &'static str,
    /// HELP text.
    pub help: &'static str,
    kind: Kind,
}

impl MetricDef {
    /// A counter (an absolute count kept by the caller).
    pub const fn counter(name: &'static str, help: &'static str) -> Self {
        MetricDef {
            name,
            help,
            kind: Kind::Counter,
        }
    }

    /// A gauge.
    pub const fn gauge(name: &'static str, help: &'static str) -> Self {
        MetricDef {
            name,
            help,
            kind: Kind::Gauge,
        }
    }

    /// True for a counter.
    pub fn is_counter(&self) -> bool {
        self.kind == Kind::Counter
    }
}

/// The agent's metrics registry. `Send + Sync`: share it as
/// `Arc<AgentMetrics>`.
#[derive(Debug, Default)]
pub struct AgentMetrics {
    inner: Mutex<Registry>,
}

/// Replaces characters not allowed in a metric or label name by `_`.
fn sanitize_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit()) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// Escapes a label value: backslash, double quote and newline.
pub fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a HELP text: backslash and newline.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

impl AgentMetrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn set(
        &self,
        kind: Kind,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        value: f64,
    ) {
        let name = sanitize_name(name);
        let mut key: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (sanitize_name(k), (*v).to_owned()))
            .collect();
        key.sort();
        let mut r = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let r = &mut *r;
        let full = r.series >= MAX_SERIES;
        let fam = match r.families.get_mut(&name) {
            Some(f) => f,
            None if full => {
                r.dropped += 1;
                return;
            }
            None => r.families.entry(name).or_insert_with(|| Family {
                help: help.to_owned(),
                kind,
                series: BTreeMap::new(),
            }),
        };
        if fam.kind != kind {
            r.dropped += 1;
            return;
        }
        if let Some(v) = fam.series.get_mut(&key) {
            *v = value;
        } else if full {
            r.dropped += 1;
        } else {
            fam.series.insert(key, value);
            r.series += 1;
        }
    }

    /// Sets a counter to `value` (an absolute count kept by the caller).
    pub fn set_counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        value: u64,
    ) {
        self.set(Kind::Counter, name, help, labels, value as f64);
    }

    /// Sets a gauge to `value`.
    pub fn set_gauge(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        value: f64,
    ) {
        self.set(Kind::Gauge, name, help, labels, value);
    }

    /// Sets the series of `def` with `labels` to `value`.
    pub fn set_def(&self, def: &MetricDef, labels: &[(&'static str, &str)], value: f64) {
        self.set(def.kind, def.name, def.help, labels, value);
    }

    /// Number of series held.
    pub fn series(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).series
    }

    /// Renders every metric, the process metrics and the store's
    /// statistics in the text exposition format 0.0.4.
    pub fn render(&self, store: &Store) -> String {
        let mut fams: BTreeMap<String, Family> = BTreeMap::new();
        let dropped;
        {
            let r = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            dropped = r.dropped;
            for (name, f) in &r.families {
                fams.insert(
                    name.clone(),
                    Family {
                        help: f.help.clone(),
                        kind: f.kind,
                        series: f.series.clone(),
                    },
                );
            }
        }
        let mut builtin = |name: &str, help: &str, kind: Kind, series: Vec<(&str, f64)>| {
            let series = series
                .into_iter()
                .map(|(reason, v)| {
                    let labels = if reason.is_empty() {
                        Vec::new()
                    } else {
                        vec![("reason".to_string(), reason.to_string())]
                    };
                    (labels, v)
                })
                .collect();
            fams.insert(
                name.to_owned(),
                Family {
                    help: help.to_owned(),
                    kind,
                    series,
                },
            );
        };
        let p = process_stats();
        if let Some(cpu) = p.cpu_seconds {
            builtin(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                Kind::Counter,
                vec![("", cpu)],
            );
        }
        if let Some(rss) = p.rss_bytes {
            builtin(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                Kind::Gauge,
                vec![("", rss)],
            );
        }
        if let Some(hwm) = p.max_rss_bytes {
            builtin(
                "process_max_resident_memory_bytes",
                "Peak resident memory size in bytes (VmHWM).",
                Kind::Gauge,
                vec![("", hwm)],
            );
        }
        let s = store.stats();
        let r = store.retention();
        builtin(
            "profiler_agent_store_files",
            "Window profiles in the store.",
            Kind::Gauge,
            vec![("", s.files as f64)],
        );
        builtin(
            "profiler_agent_store_bytes",
            "Bytes of window profiles in the store.",
            Kind::Gauge,
            vec![("", s.bytes as f64)],
        );
        builtin(
            "profiler_agent_store_max_bytes",
            "Retention: most bytes the store keeps.",
            Kind::Gauge,
            vec![("", r.max_bytes as f64)],
        );
        builtin(
            "profiler_agent_store_max_age_seconds",
            "Retention: oldest window the store keeps, in seconds.",
            Kind::Gauge,
            vec![("", r.max_age.as_secs_f64())],
        );
        builtin(
            "profiler_agent_store_windows_written_total",
            "Window profiles the store wrote since start.",
            Kind::Counter,
            vec![("", s.windows_written as f64)],
        );
        builtin(
            "profiler_agent_store_evicted_total",
            "Window profiles removed by the retention, by reason (age, size, overflow of the index cap).",
            Kind::Counter,
            vec![
                ("age", s.evicted_age as f64),
                ("overflow", s.evicted_overflow as f64),
                ("size", s.evicted_size as f64),
            ],
        );
        builtin(
            "profiler_agent_store_write_errors_total",
            "Failed store writes (profiles, index, evictions).",
            Kind::Counter,
            vec![("", s.write_errors as f64)],
        );
        builtin(
            "profiler_agent_store_index_recoveries_total",
            "Index repairs at open (torn lines, missing files, adopted files).",
            Kind::Counter,
            vec![("", s.index_recoveries as f64)],
        );
        builtin(
            "profiler_agent_metrics_dropped_series_total",
            "Metric values dropped because the series limit was reached or the type conflicted.",
            Kind::Counter,
            vec![("", dropped as f64)],
        );
        let mut out = String::with_capacity(4096);
        for (name, f) in &fams {
            let _ = writeln!(out, "# HELP {name} {}", escape_help(&f.help));
            let _ = writeln!(out, "# TYPE {name} {}", f.kind.as_str());
            for (labels, v) in &f.series {
                out.push_str(name);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (k, v)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{k}=\"{}\"", escape_label_value(v));
                    }
                    out.push('}');
                }
                let _ = writeln!(out, " {}", format_value(*v));
            }
        }
        out
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct ProcessStats {
    cpu_seconds: Option<f64>,
    rss_bytes: Option<f64>,
    max_rss_bytes: Option<f64>,
}

fn process_stats() -> ProcessStats {
    let mut p = ProcessStats::default();
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        p.cpu_seconds = parse_stat_cpu(&stat, clock_ticks());
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        p.rss_bytes = status_kb(&status, "VmRSS:").map(|k| k * 1024.0);
        p.max_rss_bytes = status_kb(&status, "VmHWM:").map(|k| k * 1024.0);
    }
    p
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime (fields 14 and 15) of `/proc/self/stat`, in seconds. The
/// command name (field 2) may contain spaces and parentheses, so fields are
/// counted after the last `)`.
fn parse_stat_cpu(stat: &str, ticks: f64) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14 -> index 11.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks)
}

fn status_kb(status: &str, key: &str) -> Option<f64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::agent::store::Retention;
    use std::collections::HashSet;
    use std::time::Duration;

    /// A parsed sample: name, labels, value.
    pub(crate) type Parsed = (String, Vec<(String, String)>, f64);

    /// Checks `text` line by line against the text exposition format
    /// 0.0.4; returns the samples.
    pub(crate) fn check_exposition(text: &str) -> Vec<Parsed> {
        fn is_name(s: &str) -> bool {
            let mut c = s.chars();
            c.next()
                .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
                && c.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        }
        assert!(text.ends_with('\n'), "output must end with a newline");
        let mut typed: HashSet<String> = HashSet::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, _) = rest.split_once(' ').expect("HELP has a text");
                assert!(is_name(name), "bad name in {line:?}");
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, t) = rest.split_once(' ').expect("TYPE has a type");
                assert!(is_name(name), "bad name in {line:?}");
                assert!(
                    ["counter", "gauge", "untyped", "summary", "histogram"].contains(&t),
                    "bad type in {line:?}"
                );
                assert!(typed.insert(name.to_owned()), "TYPE twice for {name}");
            } else {
                assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
                let name_end = line.find(['{', ' ']).expect("name then value");
                let name = &line[..name_end];
                assert!(is_name(name), "bad metric name in {line:?}");
                assert!(typed.contains(name), "sample before its TYPE: {line:?}");
                let mut rest = &line[name_end..];
                let mut labels = Vec::new();
                if let Some(r) = rest.strip_prefix('{') {
                    let mut chars = r.char_indices().peekable();
                    loop {
                        // label name
                        let start = chars.peek().expect("label").0;
                        let mut eq = None;
                        for (i, c) in chars.by_ref() {
                            if c == '=' {
                                eq = Some(i);
                                break;
                            }
                        }
                        let eq = eq.expect("label =");
                        let lname = &r[start..eq];
                        assert!(is_name(lname), "bad label name {lname:?} in {line:?}");
                        assert_eq!(chars.next().map(|x| x.1), Some('"'), "{line:?}");
                        let mut val = String::new();
                        loop {
                            match chars.next().expect("unterminated label value").1 {
                                '\\' => match chars.next().expect("escape").1 {
                                    '\\' => val.push('\\'),
                                    '"' => val.push('"'),
                                    'n' => val.push('\n'),
                                    c => panic!("bad escape \\{c} in {line:?}"),
                                },
                                '"' => break,
                                '\n' => panic!("raw newline"),
                                c => val.push(c),
                            }
                        }
                        labels.push((lname.to_owned(), val));
                        match chars.next().expect("label list end").1 {
                            ',' => continue,
                            '}' => {
                                let end = chars.peek().map(|x| x.0).unwrap_or(r.len());
                                rest = &r[end..];
                                break;
                            }
                            c => panic!("unexpected {c:?} in {line:?}"),
                        }
                    }
                }
                let v = rest.strip_prefix(' ').expect("space before value");
                let v = v.split(' ').next().expect("value");
                let value: f64 = match v {
                    "NaN" => f64::NAN,
                    "+Inf" => f64::INFINITY,
                    "-Inf" => f64::NEG_INFINITY,
                    v => v
                        .parse()
                        .unwrap_or_else(|_| panic!("bad value in {line:?}")),
                };
                samples.push((name.to_owned(), labels, value));
            }
        }
        samples
    }

    fn temp_store() -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "profiler-metrics-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let s = Store::open(
            &dir,
            Retention {
                max_age: Duration::from_secs(3600),
                max_bytes: 1 << 30,
            },
        )
        .unwrap();
        (s, dir)
    }

    #[test]
    fn renders_parseable_sorted_escaped_output() {
        let (store, dir) = temp_store();
        let m = AgentMetrics::new();
        m.set_counter("profiler_agent_b_total", "B.", &[("reason", "x")], 3);
        m.set_counter("profiler_agent_b_total", "B.", &[("reason", "x")], 5);
        m.set_counter(
            "profiler_agent_b_total",
            "B.",
            &[("reason", "quote\" back\\slash\nnewline")],
            1,
        );
        m.set_gauge("profiler_agent_a", "A \\ help\nsecond line", &[], 1.5);
        m.set_gauge("profiler_agent_nan", "N.", &[], f64::NAN);
        m.set_gauge(
            "profiler_agent_inf",
            "I.",
            &[("k", "v"), ("a", "b")],
            f64::INFINITY,
        );
        // Type conflict: dropped and counted.
        m.set_gauge("profiler_agent_b_total", "B.", &[], 1.0);
        let text = m.render(&store);
        let samples = check_exposition(&text);
        let get = |n: &str, l: &[(&str, &str)]| {
            samples
                .iter()
                .find(|(name, labels, _)| {
                    name == n
                        && labels.len() == l.len()
                        && labels.iter().zip(l).all(|(a, b)| a.0 == b.0 && a.1 == b.1)
                })
                .map(|s| s.2)
        };
        assert_eq!(get("profiler_agent_b_total", &[("reason", "x")]), Some(5.0));
        assert_eq!(
            get(
                "profiler_agent_b_total",
                &[("reason", "quote\" back\\slash\nnewline")]
            ),
            Some(1.0)
        );
        assert!(text.contains(r#"reason="quote\" back\\slash\nnewline""#));
        assert!(text.contains("# HELP profiler_agent_a A \\\\ help\\nsecond line\n"));
        assert_eq!(
            get("profiler_agent_inf", &[("a", "b"), ("k", "v")]),
            Some(f64::INFINITY)
        );
        assert_eq!(
            get("profiler_agent_metrics_dropped_series_total", &[]),
            Some(1.0)
        );
        assert!(get("process_cpu_seconds_total", &[]).is_some());
        assert!(get("process_resident_memory_bytes", &[]).unwrap() > 0.0);
        assert!(get("process_max_resident_memory_bytes", &[]).unwrap() > 0.0);
        assert_eq!(get("profiler_agent_store_files", &[]), Some(0.0));
        assert_eq!(
            get("profiler_agent_store_evicted_total", &[("reason", "size")]),
            Some(0.0)
        );
        // Sorted by name, stable across renders (apart from process values).
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn series_are_bounded() {
        let m = AgentMetrics::new();
        let values: Vec<String> = (0..MAX_SERIES + 10).map(|i| i.to_string()).collect();
        for v in &values {
            m.set_counter("profiler_agent_many_total", "M.", &[("i", v)], 1);
        }
        assert_eq!(m.series(), MAX_SERIES);
        assert_eq!(m.inner.lock().unwrap().dropped, 10);
        // Updating an existing series still works at the cap.
        m.set_counter("profiler_agent_many_total", "M.", &[("i", "0")], 7);
        assert_eq!(m.inner.lock().unwrap().dropped, 10);
    }

    #[test]
    fn parses_proc_stat_with_odd_command_names() {
        let stat = "123 (a) b (c)) S 1 123 123 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 1 1 1";
        assert_eq!(parse_stat_cpu(stat, 100.0), Some(3.0));
        assert_eq!(status_kb("VmRSS:\t  2048 kB\n", "VmRSS:"), Some(2048.0));
    }
}
