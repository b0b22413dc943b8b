//! A `profiler agent` run by a test: on loopback, over a test-owned cgroup
//! root, with short windows (2 s, a 500 ms rescan) and `--no-kube` unless a
//! test asks for a pod watch; its API read through [`crate::http`] and
//! `profiler fetch`. Killed by its PID on drop unless the test ended it
//! with [`RunningAgent::terminate`]. Every end-to-end test that runs an
//! agent starts it here ([`Launch`] for anything beyond the defaults).

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Output, Stdio},
    time::{Duration, Instant},
};

use profiler_pprof::proto::Profile;

use crate::{http, profiler_bin, wait_until, Owned};

/// How an agent is to be started: the store, the cgroup root and the
/// defaults above, changed by the builder methods, then [`Launch::start`].
#[derive(Debug, Clone)]
pub struct Launch {
    store: PathBuf,
    cgroup_root: OsString,
    window: String,
    no_kube: bool,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    wrapper: Vec<String>,
    log: PathBuf,
}

impl Launch {
    /// An agent storing into `store` and scanning `cgroup_root`, with 2 s
    /// windows, a 500 ms rescan, `--no-kube`, and its stderr in
    /// `store.log` (the store's path with the extension `log`).
    pub fn new(store: &Path, cgroup_root: impl AsRef<Path>) -> Launch {
        Launch {
            store: store.to_path_buf(),
            cgroup_root: cgroup_root.as_ref().as_os_str().to_owned(),
            window: "2s".into(),
            no_kube: true,
            args: Vec::new(),
            envs: Vec::new(),
            wrapper: Vec::new(),
            log: store.with_extension("log"),
        }
    }

    /// More flags, after the defaults.
    pub fn args(mut self, args: &[&str]) -> Launch {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Set `key=value` in the agent's environment (`NODE_NAME` and
    /// `KUBERNETES_SERVICE_HOST` are always removed).
    pub fn env(mut self, key: &str, value: &str) -> Launch {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// `--window` (default `2s`).
    pub fn window(mut self, window: &str) -> Launch {
        self.window = window.into();
        self
    }

    /// Without `--no-kube`: the agent watches pods (give it a kubeconfig
    /// with [`Launch::env`] and `--node-name` with [`Launch::args`]).
    pub fn kube(mut self) -> Launch {
        self.no_kube = false;
        self
    }

    /// Run the agent through `wrapper` (e.g. `setpriv ... --`).
    pub fn wrapper(mut self, wrapper: &[&str]) -> Launch {
        self.wrapper = wrapper.iter().map(|w| w.to_string()).collect();
        self
    }

    /// Write the agent's stderr to `log` (e.g. one log per run when a test
    /// restarts the agent on the same store).
    pub fn log(mut self, log: PathBuf) -> Launch {
        self.log = log;
        self
    }

    /// Start the agent and wait for `/healthz` (panics with its exit status
    /// and stderr if it never answers within 30 s).
    pub fn start(self) -> RunningAgent {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = match self.wrapper.split_first() {
            Some((w, rest)) => {
                let mut c = Command::new(w);
                c.args(rest).arg(profiler_bin());
                c
            }
            None => Command::new(profiler_bin()),
        };
        cmd.arg("agent")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--store")
            .arg(&self.store)
            .arg("--cgroup-root")
            .arg(&self.cgroup_root)
            .args(["--window", &self.window, "--rescan", "500ms"])
            .args(self.no_kube.then_some("--no-kube"))
            .args(&self.args)
            .env_remove("NODE_NAME")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&self.log).unwrap());
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let mut agent = RunningAgent {
            proc: Some(Owned::spawn(&mut cmd)),
            port,
            log: self.log,
        };
        let up = wait_until(Duration::from_secs(30), || {
            http::get(port, "/healthz", None).is_ok_and(|r| r.status == 200)
        });
        if !up {
            let status = agent.proc.as_mut().unwrap().0.try_wait();
            panic!(
                "agent did not answer /healthz within 30s (status {status:?}); stderr:\n{}",
                agent.log()
            );
        }
        agent
    }
}

/// A running agent.
pub struct RunningAgent {
    proc: Option<Owned>,
    /// The API's port on 127.0.0.1.
    pub port: u16,
    log: PathBuf,
}

impl RunningAgent {
    /// Start an agent with the defaults of [`Launch::new`] and `extra`
    /// flags; waits for `/healthz`.
    pub fn start(store: &Path, cgroup_root: &Path, extra: &[&str]) -> RunningAgent {
        Launch::new(store, cgroup_root).args(extra).start()
    }

    /// The agent's PID (panics after [`RunningAgent::terminate`]).
    pub fn pid(&self) -> u32 {
        self.proc.as_ref().expect("agent still running").pid()
    }

    /// The agent's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` (panics when the agent does not answer).
    pub fn get(&self, path: &str) -> http::Response {
        http::get(self.port, path, None).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `/targets` (panics unless it is a 200 with JSON).
    pub fn targets(&self) -> serde_json::Value {
        let r = self.get("/targets");
        assert_eq!(r.status, 200, "/targets: {}", r.text());
        serde_json::from_slice(&r.body).expect("/targets is JSON")
    }

    /// True when `/profiles` has a window of type `kind` for `pod` over
    /// the last hour (it answers 200).
    pub fn has_window(&self, pod: &str, kind: &str) -> bool {
        self.get(&format!("/profiles?pod={pod}&type={kind}&from=-1h"))
            .status
            == 200
    }

    /// The merged profile of type `kind` for `pod` over the last hour and
    /// the number of windows merged; None while the agent has none (panics
    /// when a 200 is not a profile).
    pub fn profile(&self, pod: &str, kind: &str) -> Option<(Profile, u64)> {
        let r = self.get(&format!("/profiles?pod={pod}&type={kind}&from=-1h"));
        if r.status != 200 {
            return None;
        }
        let windows = r
            .header("x-profile-windows")
            .and_then(|w| w.parse().ok())
            .unwrap_or(0);
        Some((decode(&r.body, &format!("pod={pod}&type={kind}")), windows))
    }

    /// The merged profile of type `kind` over the last hour for `query`
    /// (e.g. `pod=X&container=Y`); panics unless the agent answers 200.
    pub fn profile_of(&self, query: &str, kind: &str) -> Profile {
        let r = self.get(&format!("/profiles?{query}&type={kind}&from=-1h"));
        assert_eq!(r.status, 200, "/profiles?{query}: {}", r.text());
        decode(&r.body, query)
    }

    /// `profiler fetch --agent URL ARGS -o out`, as run (not checked).
    pub fn fetch_output(&self, args: &[&str], out: &Path) -> Output {
        Command::new(profiler_bin())
            .args([
                "fetch",
                "--agent",
                &format!("http://127.0.0.1:{}", self.port),
            ])
            .args(args)
            .arg("-o")
            .arg(out)
            .output()
            .expect("running profiler fetch")
    }

    /// `profiler fetch --type kind` of `pod` over the last hour into `out`
    /// (panics when it fails) and the profile read back.
    pub fn fetch(&self, pod: &str, kind: &str, out: &Path) -> Profile {
        let o = self.fetch_output(&["--pod", pod, "--type", kind, "--from", "-1h"], out);
        assert!(
            o.status.success(),
            "profiler fetch --type {kind}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        crate::read_pprof(out)
    }

    /// One scrape of `/metrics`; empty when the agent does not answer.
    pub fn metrics(&self) -> String {
        http::get(self.port, "/metrics", None)
            .map(|r| r.text())
            .unwrap_or_default()
    }

    /// The value of a metric series (the line starting with `series`
    /// followed by a space; panics when the agent does not answer).
    pub fn metric(&self, series: &str) -> Option<f64> {
        let text = self.get("/metrics").text();
        series_value(&text, series)
    }

    /// SIGTERM (by PID), then the exit status; panics if the agent has not
    /// exited within `within`.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        let mut owned = self.proc.take().expect("agent still running");
        // SAFETY: signalling the agent this test started, by its PID.
        unsafe { libc::kill(owned.pid() as i32, libc::SIGTERM) };
        let end = Instant::now() + within;
        loop {
            if let Some(st) = owned.0.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < end,
                "agent did not exit within {within:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        // Killed by its PID (Owned's drop) after this, if still running.
        if self.proc.is_some() || std::thread::panicking() {
            eprintln!("agent stderr:\n{}", self.log());
        }
    }
}

/// The value of `series` in a `/metrics` text: the line that starts with
/// `series` followed by a space.
pub fn series_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn decode(body: &[u8], what: &str) -> Profile {
    profiler_pprof::decode(body, &profiler_pprof::Limits::default())
        .unwrap_or_else(|e| panic!("/profiles?{what}: not a profile: {e}"))
}
