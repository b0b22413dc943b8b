//! `profiler fetch`: ask one or more agents for a pod's merged profile
//! over a time range and write one gzip'd pprof.
//!
//! Every agent is asked in parallel (`GET /profiles`, see
//! [`crate::agent::api`]). An agent answering 404 does not have the pod
//! (it runs on another node) or has no window in the range; that is fine
//! as long as at least one agent answers with a profile. All profiles
//! received are merged ([`profiler_pprof::Merger`]: identical samples summed,
//! mappings with build ids kept). Relative times (`-10m`) are resolved
//! once, here, so every agent is asked for the same range.
//!
//! Any other failure (connection refused, timeout, 401, 5xx, a body larger
//! than [`FetchOptions::max_response_bytes`], an answer that is not a
//! profile) is an error naming the agent, unless
//! [`FetchOptions::allow_partial`] is set, in which case it is reported in
//! [`FetchSummary::failed`] and the other answers are used.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use profiler_pprof::Merger;

use crate::agent::api::parse_time;
use crate::agent::store::decode_pprof;
use crate::error::exit;

/// Default bound on one agent's response body.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 512 << 20;
/// Most agents asked at the same time.
const PARALLEL: usize = 16;

/// What to fetch and where to write it.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Agent base URLs (`http://host:port` or `https://...`).
    pub agents: Vec<String>,
    /// `NAMESPACE/NAME`, `NAME`, or a pod uid.
    pub pod: String,
    /// Container name or id (all containers when `None`).
    pub container: Option<String>,
    /// Profile type (`cpu`, ...).
    pub profile_type: String,
    /// Range start (see [`parse_time`]).
    pub from: String,
    /// Range end (default now).
    pub to: Option<String>,
    /// Output file (gzip'd pprof), written atomically.
    pub output: PathBuf,
    /// Bearer token sent to every agent.
    pub token: Option<String>,
    /// Timeout of each request (whole request, body included).
    pub timeout: Duration,
    /// Largest accepted response body per agent.
    pub max_response_bytes: u64,
    /// Use the answers received even when some agents failed.
    pub allow_partial: bool,
}

/// One agent's successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentAnswer {
    /// The agent's URL.
    pub agent: String,
    /// Windows it merged (`X-Profile-Windows`).
    pub windows: u64,
    /// Samples in those windows (`X-Profile-Samples`).
    pub samples: u64,
    /// Bytes received.
    pub bytes: u64,
}

/// What [`fetch`] did.
#[derive(Debug, Clone)]
pub struct FetchSummary {
    /// Agents that answered with a profile.
    pub answered: Vec<AgentAnswer>,
    /// Agents that do not know the pod (404 unknown pod).
    pub unknown_pod: Vec<String>,
    /// Agents that know the pod but had no window in range (404).
    pub no_windows: Vec<String>,
    /// Agents that failed (only with `allow_partial`): URL and why.
    pub failed: Vec<(String, String)>,
    /// Range asked for.
    pub from: SystemTime,
    /// Range asked for.
    pub to: SystemTime,
    /// Total windows merged.
    pub windows: u64,
    /// Total samples.
    pub samples: u64,
    /// The file written.
    pub output: PathBuf,
    /// Its size.
    pub bytes_written: u64,
}

/// Why [`fetch`] failed. Every message is one line naming the cause and
/// what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// Bad options.
    #[error("{0}")]
    Usage(String),
    /// No agent knows the pod.
    #[error("no agent has profiles of pod {pod} (asked {}): check the pod name and namespace, or list what an agent has with: curl {}/targets", .agents.join(", "), .agents.first().map(String::as_str).unwrap_or("http://AGENT:7070"))]
    UnknownPod {
        /// The pod as given.
        pod: String,
        /// The agents asked.
        agents: Vec<String>,
    },
    /// Agents know the pod but none has a window in the range.
    #[error("pod {pod} is known to {} but has no {profile_type} windows in the range: {detail}", .agents.join(", "))]
    NoWindows {
        /// The pod as given.
        pod: String,
        /// The profile type.
        profile_type: String,
        /// The agents that know the pod.
        agents: Vec<String>,
        /// The first agent's message (what it has stored).
        detail: String,
    },
    /// An agent failed.
    #[error("agent {agent}: {why}")]
    Agent {
        /// The agent's URL.
        agent: String,
        /// What went wrong and what to do.
        why: String,
    },
    /// An agent answered 200 with something that is not a profile.
    #[error(
        "agent {agent}: the answer is not a profile ({source}): is this URL a profiler agent?"
    )]
    NotAProfile {
        /// The agent's URL.
        agent: String,
        /// The decoder's answer.
        #[source]
        source: profiler_pprof::DecodeError,
    },
    /// The answers could not be merged.
    #[error("merging the agents' profiles: profile from {agent}: {source}")]
    Merge {
        /// The agent whose profile did not merge.
        agent: String,
        /// The merger's answer.
        #[source]
        source: profiler_pprof::MergeError,
    },
    /// Writing the output failed.
    #[error("writing {}: {source} (check the directory exists and is writable)", path.display())]
    Output {
        /// The output path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl FetchError {
    /// The `profiler` exit code ([`crate::error::exit`]): 2 usage,
    /// 4 pod not found on any agent, 7 output, 1 everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            FetchError::Usage(_) => exit::USAGE,
            FetchError::UnknownPod { .. } => exit::TARGET,
            FetchError::Output { .. } => exit::OUTPUT,
            _ => exit::FAILURE,
        }
    }
}

enum Outcome {
    Profile {
        body: Vec<u8>,
        windows: u64,
        samples: u64,
    },
    UnknownPod,
    NoWindows(String),
    Failed(String),
}

fn unix_secs(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(300).collect()
}

fn ask(
    agent: &ureq::Agent,
    base: &str,
    opts: &FetchOptions,
    ns: Option<&str>,
    pod: &str,
    from: &str,
    to: &str,
) -> Outcome {
    let url = format!("{}/profiles", base.trim_end_matches('/'));
    let mut req = agent
        .get(&url)
        .query("pod", pod)
        .query("type", &opts.profile_type)
        .query("from", from)
        .query("to", to);
    if let Some(ns) = ns {
        req = req.query("namespace", ns);
    }
    if let Some(c) = &opts.container {
        req = req.query("container", c);
    }
    if let Some(t) = &opts.token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Timeout(_)) => {
            return Outcome::Failed(format!(
                "no answer within {}: check the agent is up, or raise --timeout",
                humantime::format_duration(opts.timeout)
            ))
        }
        Err(e) => {
            return Outcome::Failed(format!(
                "request failed ({e}): check the URL and that the agent is reachable (kubectl port-forward, Service, firewall)"
            ))
        }
    };
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let kind = header("x-profile-error").unwrap_or_default();
    let windows = header("x-profile-windows")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let samples = header("x-profile-samples")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let limit = if status == 200 {
        opts.max_response_bytes
    } else {
        64 << 10
    };
    let body = match resp.body_mut().with_config().limit(limit).read_to_vec() {
        Ok(b) => b,
        Err(ureq::Error::BodyExceedsLimit(n)) => {
            return Outcome::Failed(format!(
                "the answer is larger than {n} bytes: ask for a shorter range or one container"
            ))
        }
        Err(e) => return Outcome::Failed(format!("reading the answer failed: {e}")),
    };
    let text = || first_line(&String::from_utf8_lossy(&body));
    match status {
        200 => Outcome::Profile {
            body,
            windows,
            samples,
        },
        404 if kind == "no-windows" => Outcome::NoWindows(text()),
        404 if kind == "unknown-pod" => Outcome::UnknownPod,
        401 => Outcome::Failed(
            "401 unauthorized: pass the agent's token with --token-file PATH".into(),
        ),
        404 => Outcome::Failed(format!(
            "404 without a profiler answer ({}): is this URL a profiler agent?",
            text()
        )),
        s => Outcome::Failed(format!("HTTP {s}: {}", text())),
    }
}

/// Validates an agent URL: `http(s)://host[:port][/prefix]`.
fn check_url(u: &str) -> Result<(), FetchError> {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .ok_or_else(|| {
            FetchError::Usage(format!(
                "--agent {u}: use an http:// or https:// URL, e.g. http://10.0.0.5:7070"
            ))
        })?;
    if rest.is_empty() || rest.starts_with('/') || u.contains(['?', '#', ' ']) {
        return Err(FetchError::Usage(format!(
            "--agent {u}: expected http://HOST:PORT"
        )));
    }
    Ok(())
}

/// Asks every agent and writes the merged profile to `opts.output`.
pub fn fetch(opts: &FetchOptions) -> Result<FetchSummary, FetchError> {
    if opts.agents.is_empty() {
        return Err(FetchError::Usage(
            "no agent to ask: pass --agent http://HOST:PORT (repeatable)".into(),
        ));
    }
    for a in &opts.agents {
        check_url(a)?;
    }
    let pod_arg = opts.pod.trim();
    if pod_arg.is_empty() {
        return Err(FetchError::Usage(
            "--pod is empty: pass NAMESPACE/NAME, NAME or a pod uid".into(),
        ));
    }
    let (ns, pod) = match pod_arg.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            (Some(ns), name)
        }
        Some(_) => {
            return Err(FetchError::Usage(format!(
                "--pod {pod_arg}: expected NAMESPACE/NAME, NAME or a pod uid"
            )))
        }
        None => (None, pod_arg),
    };
    if opts.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
        return Err(FetchError::Usage(
            "the token is empty: check the file given to --token-file".into(),
        ));
    }
    let now = SystemTime::now();
    let from =
        parse_time(&opts.from, now).map_err(|e| FetchError::Usage(format!("--from: {e}")))?;
    let to = match &opts.to {
        Some(t) => parse_time(t, now).map_err(|e| FetchError::Usage(format!("--to: {e}")))?,
        None => now,
    };
    if from > to {
        return Err(FetchError::Usage(format!(
            "--from ({}) is after --to ({})",
            humantime::format_rfc3339_millis(from),
            humantime::format_rfc3339_millis(to)
        )));
    }
    let (from_s, to_s) = (unix_secs(from), unix_secs(to));
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(opts.timeout))
        .http_status_as_error(false)
        .build();
    let client: ureq::Agent = config.into();
    let mut outcomes: Vec<(String, Outcome)> = Vec::with_capacity(opts.agents.len());
    for chunk in opts.agents.chunks(PARALLEL) {
        std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|a| {
                    let client = &client;
                    let (from_s, to_s) = (&from_s, &to_s);
                    (
                        a.clone(),
                        s.spawn(move || ask(client, a, opts, ns, pod, from_s, to_s)),
                    )
                })
                .collect();
            for (a, h) in handles {
                let o = h
                    .join()
                    .unwrap_or_else(|_| Outcome::Failed("internal error".into()));
                outcomes.push((a, o));
            }
        });
    }
    let mut summary = FetchSummary {
        answered: Vec::new(),
        unknown_pod: Vec::new(),
        no_windows: Vec::new(),
        failed: Vec::new(),
        from,
        to,
        windows: 0,
        samples: 0,
        output: opts.output.clone(),
        bytes_written: 0,
    };
    let mut merger = Merger::new();
    let mut no_windows_detail = None;
    for (agent, o) in outcomes {
        match o {
            Outcome::Profile {
                body,
                windows,
                samples,
            } => {
                let p = decode_pprof(&body).map_err(|source| FetchError::NotAProfile {
                    agent: agent.clone(),
                    source,
                })?;
                merger.add(&p).map_err(|source| FetchError::Merge {
                    agent: agent.clone(),
                    source,
                })?;
                summary.windows += windows;
                summary.samples += samples;
                summary.answered.push(AgentAnswer {
                    agent,
                    windows,
                    samples,
                    bytes: body.len() as u64,
                });
            }
            Outcome::UnknownPod => summary.unknown_pod.push(agent),
            Outcome::NoWindows(d) => {
                no_windows_detail.get_or_insert(d);
                summary.no_windows.push(agent);
            }
            Outcome::Failed(why) if opts.allow_partial => summary.failed.push((agent, why)),
            Outcome::Failed(why) => return Err(FetchError::Agent { agent, why }),
        }
    }
    if summary.answered.is_empty() {
        if !summary.no_windows.is_empty() {
            return Err(FetchError::NoWindows {
                pod: pod_arg.to_owned(),
                profile_type: opts.profile_type.clone(),
                agents: summary.no_windows,
                detail: no_windows_detail.unwrap_or_default(),
            });
        }
        if let Some((agent, why)) = summary.failed.first() {
            return Err(FetchError::Agent {
                agent: agent.clone(),
                why: format!("{why} (and no other agent had the pod)"),
            });
        }
        return Err(FetchError::UnknownPod {
            pod: pod_arg.to_owned(),
            agents: opts.agents.clone(),
        });
    }
    let mut merged = merger.finish();
    if summary.answered.len() > 1 {
        let note = format!(
            "profiler fetch: merged the answers of {}",
            summary
                .answered
                .iter()
                .map(|a| a.agent.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        merged.comment.push(merged.string_table.len() as i64);
        merged.string_table.push(note);
    }
    let gz = profiler_pprof::encode_gzip(&merged);
    profiler_pprof::write_atomic(&opts.output, &gz).map_err(|source| FetchError::Output {
        path: opts.output.clone(),
        source,
    })?;
    summary.bytes_written = gz.len() as u64;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_answer_errors_keep_their_typed_source() {
        use std::error::Error as _;
        let path = PathBuf::from("/nonexistent-profiler-dir/out.pb.gz");
        let e = profiler_pprof::write_atomic(&path, b"x")
            .map_err(|source| FetchError::Output {
                path: path.clone(),
                source,
            })
            .unwrap_err();
        assert_eq!(e.exit_code(), exit::OUTPUT);
        let io = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(
            io.map(|io| io.kind()),
            Some(std::io::ErrorKind::NotFound),
            "{e}"
        );
        let msg = e.to_string();
        assert!(
            msg.starts_with("writing /nonexistent-profiler-dir/out.pb.gz: ")
                && msg.ends_with("(check the directory exists and is writable)"),
            "{msg}"
        );
        let e = decode_pprof(b"<html>not a profile</html>")
            .map_err(|source| FetchError::NotAProfile {
                agent: "http://a:7070".into(),
                source,
            })
            .unwrap_err();
        assert_eq!(e.exit_code(), exit::FAILURE);
        assert!(
            e.source()
                .is_some_and(|s| s.is::<profiler_pprof::DecodeError>()),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with("agent http://a:7070: the answer is not a profile ("),
            "{e}"
        );
    }

    #[test]
    fn urls_are_checked() {
        assert!(check_url("http://10.0.0.5:7070").is_ok());
        assert!(check_url("https://agent.example:443/").is_ok());
        assert!(check_url("10.0.0.5:7070").is_err());
        assert!(check_url("http://").is_err());
        assert!(check_url("http://a:1/?x").is_err());
    }

    #[test]
    fn usage_errors_have_exit_code_2() {
        let opts = FetchOptions {
            agents: vec!["http://127.0.0.1:1".into()],
            pod: "a/b/c".into(),
            container: None,
            profile_type: "cpu".into(),
            from: "-5m".into(),
            to: None,
            output: "x.pb.gz".into(),
            token: None,
            timeout: Duration::from_secs(1),
            max_response_bytes: 1,
            allow_partial: false,
        };
        let e = fetch(&opts).unwrap_err();
        assert_eq!(e.exit_code(), exit::USAGE, "{e}");
        let e = fetch(&FetchOptions {
            pod: "p".into(),
            from: "soon".into(),
            ..opts.clone()
        })
        .unwrap_err();
        assert!(e.to_string().contains("--from"), "{e}");
        assert_eq!(e.exit_code(), exit::USAGE);
    }
}
