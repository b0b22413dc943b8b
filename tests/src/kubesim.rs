//! A loopback HTTP server that speaks the Kubernetes pods list/watch
//! protocol, enough for `profiler agent`'s pod watch: `GET /api/v1/pods`
//! (a `PodList` with a `resourceVersion`) and `?watch=true` (a chunked
//! stream of `WatchEvent`s after the requested resource version). Tests add,
//! change and delete pods, can break every open watch, and read the request
//! lines the server saw (to check the node field selector and that nothing
//! LISTs per lookup). No kube-apiserver can run here; this is the protocol,
//! not a mock of our code.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Write as _},
    net::{TcpListener, TcpStream},
    sync::{Arc, Condvar, Mutex},
    thread,
    time::Duration,
};

/// A pod as the simulator serves it.
#[derive(Clone, Debug)]
pub struct SimPod {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `spec.nodeName`.
    pub node: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// (container name, runtime container id such as `containerd://<hex>`).
    pub containers: Vec<(String, String)>,
}

impl SimPod {
    fn to_json(&self, rv: u64) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "uid": self.uid,
                "resourceVersion": rv.to_string(),
                "labels": self.labels,
            },
            "spec": {
                "nodeName": self.node,
                "containers": self.containers.iter().map(|(n, _)| serde_json::json!({"name": n, "image": "example/app:1"})).collect::<Vec<_>>(),
            },
            "status": {
                "phase": "Running",
                "containerStatuses": self.containers.iter().map(|(n, id)| serde_json::json!({
                    "name": n, "containerID": id, "image": "example/app:1", "imageID": "",
                    "ready": true, "restartCount": 0, "started": true,
                })).collect::<Vec<_>>(),
            }
        })
    }
}

#[derive(Default)]
struct State {
    pods: BTreeMap<String, (SimPod, u64)>,
    rv: u64,
    /// (resource version, event type, object)
    events: Vec<(u64, &'static str, serde_json::Value)>,
    requests: Vec<String>,
    /// Bumped to make every open watch drop its connection.
    break_generation: u64,
    shutdown: bool,
}

/// The running simulator; stopped on drop.
pub struct KubeSim {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    state: Arc<(Mutex<State>, Condvar)>,
    port: u16,
    accept: Option<thread::JoinHandle<()>>,
}

fn node_matches(query: &str, node: &str) -> bool {
    // fieldSelector=spec.nodeName%3Dnode-a (also unescaped '=').
    let decoded = query.replace("%3D", "=").replace("%3d", "=");
    match decoded
        .split('&')
        .find_map(|kv| kv.strip_prefix("fieldSelector="))
    {
        Some(sel) => sel
            .split(',')
            .all(|term| match term.strip_prefix("spec.nodeName=") {
                Some(n) => n == node,
                None => true,
            }),
        None => true,
    }
}

fn param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

fn handle(mut stream: TcpStream, state: Arc<(Mutex<State>, Condvar)>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    // Skip headers.
    loop {
        let mut h = String::new();
        match reader.read_line(&mut h) {
            Ok(0) | Err(_) => break,
            Ok(_) if h == "\r\n" || h == "\n" => break,
            Ok(_) => {}
        }
    }
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
    let (lock, cvar) = &*state;
    lock.lock().unwrap().requests.push(target.clone());
    if path != "/api/v1/pods" {
        let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#;
        let _ = write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return;
    }
    let watch = matches!(param(query, "watch"), Some("true") | Some("1"));
    if !watch {
        let st = lock.lock().unwrap();
        let items: Vec<serde_json::Value> = st
            .pods
            .values()
            .filter(|(p, _)| node_matches(query, &p.node))
            .map(|(p, rv)| p.to_json(*rv))
            .collect();
        let body = serde_json::json!({
            "apiVersion": "v1", "kind": "PodList",
            "metadata": {"resourceVersion": st.rv.to_string()},
            "items": items,
        })
        .to_string();
        drop(st);
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return;
    }
    let mut from: u64 = param(query, "resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return;
    }
    let mut st = lock.lock().unwrap();
    let generation = st.break_generation;
    loop {
        if st.shutdown || st.break_generation != generation {
            // Drop the connection without the final chunk: a broken watch.
            return;
        }
        let pending: Vec<(u64, String)> = st
            .events
            .iter()
            .filter(|(rv, _, obj)| {
                *rv > from && node_matches(query, obj["spec"]["nodeName"].as_str().unwrap_or(""))
            })
            .map(|(rv, ty, obj)| (*rv, format!("{{\"type\":\"{ty}\",\"object\":{obj}}}\n")))
            .collect();
        if !pending.is_empty() {
            drop(st);
            for (rv, ev) in pending {
                if write!(stream, "{:x}\r\n{ev}\r\n", ev.len()).is_err() {
                    return;
                }
                from = rv;
            }
            let _ = stream.flush();
            st = lock.lock().unwrap();
            continue;
        }
        st = cvar.wait_timeout(st, Duration::from_millis(200)).unwrap().0;
    }
}

impl KubeSim {
    /// Start on 127.0.0.1 with a free port.
    pub fn start() -> KubeSim {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the Kubernetes API sim");
        let port = listener.local_addr().unwrap().port();
        let state: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let st = state.clone();
        let accept = thread::spawn(move || {
            for conn in listener.incoming() {
                if st.0.lock().unwrap().shutdown {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                thread::spawn(move || handle(conn, st));
            }
        });
        KubeSim {
            url: format!("http://127.0.0.1:{port}"),
            state,
            port,
            accept: Some(accept),
        }
    }

    fn change(&self, ty: &'static str, pod: SimPod) {
        let (lock, cvar) = &*self.state;
        let mut st = lock.lock().unwrap();
        st.rv += 1;
        let rv = st.rv;
        let obj = pod.to_json(rv);
        if ty == "DELETED" {
            st.pods.remove(&pod.uid);
        } else {
            st.pods.insert(pod.uid.clone(), (pod, rv));
        }
        st.events.push((rv, ty, obj));
        cvar.notify_all();
    }

    /// Add (or replace) a pod: `ADDED` (or `MODIFIED`) on open watches.
    pub fn put(&self, pod: SimPod) {
        let exists = self.state.0.lock().unwrap().pods.contains_key(&pod.uid);
        self.change(if exists { "MODIFIED" } else { "ADDED" }, pod);
    }

    /// Delete a pod by uid: `DELETED` on open watches.
    pub fn delete(&self, uid: &str) {
        let pod = self
            .state
            .0
            .lock()
            .unwrap()
            .pods
            .get(uid)
            .map(|p| p.0.clone());
        if let Some(p) = pod {
            self.change("DELETED", p);
        }
    }

    /// Drop every open watch connection (clients must resume).
    pub fn break_watches(&self) {
        let (lock, cvar) = &*self.state;
        lock.lock().unwrap().break_generation += 1;
        cvar.notify_all();
    }

    /// Request targets (path and query) seen so far.
    pub fn requests(&self) -> Vec<String> {
        self.state.0.lock().unwrap().requests.clone()
    }

    /// A kubeconfig pointing at this server, written to `path`.
    pub fn write_kubeconfig(&self, path: &std::path::Path) {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster:\n    server: {}\n\
             contexts:\n- name: sim\n  context:\n    cluster: sim\n    user: sim\n\
             current-context: sim\nusers:\n- name: sim\n  user:\n    token: test-token\n",
            self.url
        );
        std::fs::write(path, text).expect("writing the kubeconfig");
    }
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        {
            let (lock, cvar) = &*self.state;
            lock.lock().unwrap().shutdown = true;
            cvar.notify_all();
        }
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}
