//! A `profiler agent` run by a test: on loopback, `--no-kube`, over a
//! test-owned cgroup root, with short windows; its API read through
//! [`crate::http`] and `profiler fetch`. Killed by its PID on drop.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use profiler_pprof::proto::Profile;

use crate::{http, profiler_bin, read_pprof, wait_until, Owned};

/// A running agent.
pub struct RunningAgent {
    _proc: Owned,
    /// The API's port on 127.0.0.1.
    pub port: u16,
    log: PathBuf,
}

impl RunningAgent {
    /// Start an agent storing into `store`, scanning `cgroup_root`, with
    /// 2 s windows, a 500 ms rescan and `extra` flags; waits for
    /// `/healthz` (panics with its stderr if it never answers).
    pub fn start(store: &Path, cgroup_root: &Path, extra: &[&str]) -> RunningAgent {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = store.with_extension("log");
        let proc = Owned::spawn(
            Command::new(profiler_bin())
                .arg("agent")
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--store")
                .arg(store)
                .arg("--cgroup-root")
                .arg(cgroup_root)
                .args(["--no-kube", "--window", "2s", "--rescan", "500ms"])
                .args(extra)
                .env_remove("NODE_NAME")
                .env_remove("KUBERNETES_SERVICE_HOST")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap()),
        );
        let agent = RunningAgent {
            _proc: proc,
            port,
            log,
        };
        assert!(
            wait_until(Duration::from_secs(30), || {
                http::get(port, "/healthz", None).is_ok_and(|r| r.status == 200)
            }),
            "agent did not answer /healthz; stderr:\n{}",
            agent.log()
        );
        agent
    }

    /// The agent's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` (panics when the agent does not answer).
    pub fn get(&self, path: &str) -> http::Response {
        http::get(self.port, path, None).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// The merged profile of type `kind` for `pod` over the last hour and
    /// the number of windows merged; None while the agent has none.
    pub fn profile(&self, pod: &str, kind: &str) -> Option<(Profile, u64)> {
        let r = self.get(&format!("/profiles?pod={pod}&type={kind}&from=-1h"));
        if r.status != 200 {
            return None;
        }
        let windows = r
            .header("x-profile-windows")
            .and_then(|w| w.parse().ok())
            .unwrap_or(0);
        let p = profiler_pprof::decode(&r.body, &profiler_pprof::Limits::default()).ok()?;
        Some((p, windows))
    }

    /// `profiler fetch --type kind` of `pod` over the last hour into `out`
    /// (panics when it fails) and the profile read back.
    pub fn fetch(&self, pod: &str, kind: &str, out: &Path) -> Profile {
        let o = Command::new(profiler_bin())
            .args([
                "fetch",
                "--agent",
                &format!("http://127.0.0.1:{}", self.port),
            ])
            .args(["--pod", pod, "--type", kind, "--from", "-1h", "-o"])
            .arg(out)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "profiler fetch --type {kind}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        read_pprof(out)
    }

    /// The value of a metric series (the line starting with `series`).
    pub fn metric(&self, series: &str) -> Option<f64> {
        let text = self.get("/metrics").text();
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("agent stderr:\n{}", self.log());
        }
    }
}
