//! Every manifest under `deploy/` parsed into typed objects with unknown
//! fields rejected, and the invariants the agent and the CI gate rely on.
//!
//! Kubernetes objects are k8s-openapi types. k8s-openapi silently ignores
//! fields it does not know (a `hostPid: true` typo would deploy an agent
//! that sees no processes), so every document goes through `serde_ignored`
//! and any ignored path fails the test. Kustomize, Tekton and GitHub Actions
//! files use the local structs below (`deny_unknown_fields`) for the subset
//! of their schemas this repository uses.
//!
//! Command lines in the manifests and CI scripts are checked against the
//! real flags: `profiler agent` and `profiler fetch` through
//! `clap::CommandFactory` on `profiler_user::cli::Cli` (the DaemonSet's
//! arguments are also parsed by it), `profdiff gate` the same way on
//! `diff::cli::Cli` (the `diff` crate's `cli` feature). Both must also offer
//! every flag of the CLI contract the manifests were written against
//! (constants below).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    Container, Namespace, PodSpec, Secret, Service, ServiceAccount, Volume,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml_ng::Value;

// ---------------------------------------------------------------------------
// Contract constants

/// `profiler agent` flags of the CLI contract; the real definitions
/// (`profiler_user::cli::AgentArgs`) must have at least these.
const AGENT_CONTRACT: &[&str] = &[
    "node-name",
    "listen",
    "token-file",
    "store",
    "window",
    "retention-age",
    "retention-size",
    "frequency",
    "cgroup-root",
    "namespace",
    "selector",
    "container",
    "process-name",
    "no-kube",
];

/// `profiler fetch` flags of the CLI contract (`FetchArgs`).
const FETCH_CONTRACT: &[&str] = &[
    "agent",
    "pod",
    "container",
    "type",
    "from",
    "to",
    "o",
    "token-file",
];

/// Capabilities the DaemonSet adds; daemonset.yaml explains each.
const AGENT_CAPABILITIES: &[&str] = &[
    "BPF",
    "PERFMON",
    "SYS_PTRACE",
    "DAC_READ_SEARCH",
    "CHECKPOINT_RESTORE",
    "SYSLOG",
];

// ---------------------------------------------------------------------------
// Loading

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kube_dir() -> PathBuf {
    deploy_dir().join("kubernetes")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Deserialize `value` into `T`; any field `T` does not know is an error
/// naming its path (e.g. `spec.template.spec.hostPid`).
fn strict<T: DeserializeOwned>(value: Value, what: &str) -> Result<T, String> {
    let mut ignored = Vec::new();
    let t = serde_ignored::deserialize(value, |path| {
        // serde_ignored writes `?` for each Option on the way; drop them.
        let path = path.to_string();
        let parts: Vec<&str> = path.split('.').filter(|p| *p != "?").collect();
        ignored.push(parts.join("."));
    })
    .map_err(|e| format!("{what}: {e}"))?;
    if ignored.is_empty() {
        Ok(t)
    } else {
        Err(format!("{what}: unknown fields: {}", ignored.join(", ")))
    }
}

/// Every YAML document of a multi-document text (empty documents skipped).
fn documents(text: &str, what: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{what}: invalid YAML: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// One Kubernetes object of the manifests, typed by apiVersion and kind.
/// (Test-only and few: the size difference of the variants does not matter.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Object {
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    DaemonSet(Box<DaemonSet>),
    Service(Service),
    Secret(Secret),
}

fn typed(value: Value, what: &str) -> Result<Object, String> {
    let field = |name: &str| {
        value
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    let what = format!("{what} ({api_version} {kind})");
    Ok(match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => Object::Namespace(strict(value, &what)?),
        ("v1", "ServiceAccount") => Object::ServiceAccount(strict(value, &what)?),
        ("v1", "Service") => Object::Service(strict(value, &what)?),
        ("v1", "Secret") => Object::Secret(strict(value, &what)?),
        ("apps/v1", "DaemonSet") => Object::DaemonSet(Box::new(strict(value, &what)?)),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
            Object::ClusterRole(strict(value, &what)?)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            Object::ClusterRoleBinding(strict(value, &what)?)
        }
        _ => return Err(format!("{what}: no typed model for this apiVersion/kind")),
    })
}

/// Kustomize's `Kustomization`, the fields used here.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Kustomization {
    api_version: String,
    kind: String,
    namespace: String,
    #[serde(default)]
    labels: Vec<KustomizeLabels>,
    resources: Vec<String>,
    #[serde(default)]
    secret_generator: Vec<SecretGenerator>,
    #[serde(default)]
    images: Vec<KustomizeImage>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KustomizeLabels {
    pairs: BTreeMap<String, String>,
    #[serde(default)]
    include_selectors: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SecretGenerator {
    name: String,
    #[serde(rename = "type")]
    type_: Option<String>,
    #[serde(default)]
    files: Vec<String>,
}

impl SecretGenerator {
    /// (key, file) pairs: `key=path` or a path whose basename is the key.
    fn keys(&self) -> Vec<(String, String)> {
        self.files
            .iter()
            .map(|f| match f.split_once('=') {
                Some((k, p)) => (k.to_string(), p.to_string()),
                None => (
                    Path::new(f)
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                    f.clone(),
                ),
            })
            .collect()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KustomizeImage {
    name: String,
    new_name: Option<String>,
    new_tag: Option<String>,
}

/// The whole `deploy/kubernetes` folder, parsed.
struct Manifests {
    kustomization: Kustomization,
    /// (file name, object), in kustomization order.
    objects: Vec<(String, Object)>,
}

impl Manifests {
    fn load() -> Manifests {
        let dir = kube_dir();
        let kpath = dir.join("kustomization.yaml");
        let mut kdocs = documents(&read(&kpath), "kustomization.yaml");
        assert_eq!(kdocs.len(), 1, "kustomization.yaml: one document");
        let kustomization: Kustomization =
            strict(kdocs.remove(0), "kustomization.yaml").unwrap_or_else(|e| panic!("{e}"));
        let mut objects = Vec::new();
        let mut errors = Vec::new();
        for file in &kustomization.resources {
            let text = read(&dir.join(file));
            for (i, doc) in documents(&text, file).into_iter().enumerate() {
                match typed(doc, &format!("{file} document {}", i + 1)) {
                    Ok(o) => objects.push((file.clone(), o)),
                    Err(e) => errors.push(e),
                }
            }
        }
        assert!(errors.is_empty(), "{}", errors.join("\n"));
        Manifests {
            kustomization,
            objects,
        }
    }

    fn daemonset(&self) -> &DaemonSet {
        let all: Vec<&DaemonSet> = self
            .objects
            .iter()
            .filter_map(|(_, o)| match o {
                Object::DaemonSet(d) => Some(&**d),
                _ => None,
            })
            .collect();
        assert_eq!(all.len(), 1, "exactly one DaemonSet");
        all[0]
    }

    fn services(&self) -> Vec<&Service> {
        self.objects
            .iter()
            .filter_map(|(_, o)| match o {
                Object::Service(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    fn pod_spec(&self) -> &PodSpec {
        self.daemonset()
            .spec
            .template
            .spec
            .as_ref()
            .expect("DaemonSet has a pod template spec")
    }

    fn agent(&self) -> &Container {
        let spec = self.pod_spec();
        assert_eq!(spec.containers.len(), 1, "one container in the agent pod");
        &spec.containers[0]
    }

    fn pod_labels(&self) -> BTreeMap<String, String> {
        self.daemonset()
            .spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default()
    }

    fn agent_args(&self) -> BTreeMap<String, Vec<String>> {
        let args = self.agent().args.clone().unwrap_or_default();
        assert_eq!(
            args.first().map(String::as_str),
            Some("agent"),
            "args start with the `agent` subcommand"
        );
        parse_flags(&args[1..], &agent_flags(), "profiler agent")
    }

    fn volume(&self, name: &str) -> &Volume {
        self.pod_spec()
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("no volume {name:?}"))
    }

    /// The volume mounted at `dir`, with its readOnly flag.
    fn mount_at(&self, dir: &str) -> (&Volume, bool) {
        let m = self
            .agent()
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path.trim_end_matches('/') == dir.trim_end_matches('/'))
            .unwrap_or_else(|| panic!("nothing is mounted at {dir}"));
        (self.volume(&m.name), m.read_only == Some(true))
    }
}

/// Parse `--flag value` / `--flag=value` / `-f value` arguments against a
/// flag table; panics naming an unknown flag or a missing value.
fn parse_flags(
    args: &[String],
    table: &[(String, bool)],
    tool: &str,
) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let stripped = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-'))
            .unwrap_or_else(|| panic!("{tool}: unexpected positional argument {arg:?}"));
        let (name, inline) = match stripped.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (stripped, None),
        };
        let takes_value = table
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("{tool}: unknown flag {arg:?}"));
        let value = match (takes_value, inline) {
            (true, Some(v)) => v,
            (true, None) => it
                .next()
                .unwrap_or_else(|| panic!("{tool}: {arg} needs a value"))
                .clone(),
            (false, None) => String::new(),
            (false, Some(_)) => panic!("{tool}: {arg} takes no value"),
        };
        out.entry(name.to_string()).or_default().push(value);
    }
    out
}

fn one<'a>(flags: &'a BTreeMap<String, Vec<String>>, name: &str) -> &'a str {
    match flags.get(name).map(Vec::as_slice) {
        Some([v]) => v,
        other => panic!("--{name}: expected exactly one value, got {other:?}"),
    }
}

fn port_of_listen(listen: &str) -> i32 {
    listen
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("--listen {listen:?} has no port"))
}

/// CPU in millicores or memory in bytes from a Kubernetes quantity (the
/// forms used here: `250m`, `1`, `128Mi`, `1Gi`, `512Ki`, `1000`).
fn quantity(q: &str) -> f64 {
    let units = [
        ("Ki", 1024f64),
        ("Mi", 1024f64 * 1024.0),
        ("Gi", 1024f64 * 1024.0 * 1024.0),
        ("m", 0.001),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
    ];
    for (suffix, factor) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("quantity {q:?}"))
                * factor;
        }
    }
    q.parse().unwrap_or_else(|_| panic!("quantity {q:?}"))
}

fn matches_selector(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

// ---------------------------------------------------------------------------
// Kubernetes manifests

#[test]
fn every_manifest_parses_into_typed_objects_without_unknown_fields() {
    let m = Manifests::load();
    let kinds: BTreeSet<&str> = m
        .objects
        .iter()
        .map(|(_, o)| match o {
            Object::Namespace(_) => "Namespace",
            Object::ServiceAccount(_) => "ServiceAccount",
            Object::ClusterRole(_) => "ClusterRole",
            Object::ClusterRoleBinding(_) => "ClusterRoleBinding",
            Object::DaemonSet(_) => "DaemonSet",
            Object::Service(_) => "Service",
            Object::Secret(_) => "Secret",
        })
        .collect();
    for want in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
        "Service",
    ] {
        assert!(kinds.contains(want), "no {want} in deploy/kubernetes");
    }
}

#[test]
fn every_yaml_file_in_the_folder_parses_even_if_not_listed() {
    // Guards the other direction of the kustomization check: a file that is
    // in the folder but not in `resources` is still valid YAML of a known kind.
    for entry in std::fs::read_dir(kube_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".yaml") || name == "kustomization.yaml" {
            continue;
        }
        for (i, doc) in documents(&read(&path), &name).into_iter().enumerate() {
            typed(doc, &format!("{name} document {}", i + 1)).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

#[test]
fn typo_in_a_field_name_is_caught() {
    let text = read(&kube_dir().join("daemonset.yaml"));
    assert!(text.contains("hostPID: true"));
    for (typo, path) in [
        (
            text.replace("hostPID: true", "hostPid: true"),
            "spec.template.spec.hostPid",
        ),
        (
            text.replace("readOnlyRootFilesystem:", "readOnlyRootFileSystem:"),
            "spec.template.spec.containers.0.securityContext.readOnlyRootFileSystem",
        ),
        (
            text.replace("fieldPath: spec.nodeName", "fieldpath: spec.nodeName"),
            "fieldRef.fieldpath",
        ),
    ] {
        let doc = documents(&typo, "daemonset.yaml").remove(0);
        let err = typed(doc, "daemonset.yaml").expect_err("a typo must fail");
        assert!(
            err.contains("unknown fields") && err.contains(path),
            "error {err:?} should name {path}"
        );
    }
    // An unknown kind is refused rather than skipped.
    let doc = documents("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n", "x").remove(0);
    assert!(typed(doc, "pod").is_err());
    // So is an unknown kustomization field.
    let k = documents(
        "apiVersion: x\nkind: Kustomization\nnamespace: n\nresources: []\ncommonLabel: {}\n",
        "k",
    )
    .remove(0);
    assert!(strict::<Kustomization>(k, "k").is_err());
}

#[test]
fn kustomization_lists_every_file_of_the_folder() {
    let m = Manifests::load();
    let k = &m.kustomization;
    assert_eq!(k.api_version, "kustomize.config.k8s.io/v1beta1");
    assert_eq!(k.kind, "Kustomization");
    let gitignore = read(&kube_dir().join(".gitignore"));
    let ignored: BTreeSet<&str> = gitignore
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(|l| l.trim().trim_start_matches('/'))
        .collect();
    let generated: BTreeSet<String> = k
        .secret_generator
        .iter()
        .flat_map(|g| g.keys().into_iter().map(|(_, f)| f))
        .collect();
    for f in &generated {
        assert!(
            ignored.contains(f.as_str()),
            "secretGenerator input {f} must be git-ignored (deploy/kubernetes/.gitignore): it holds a secret"
        );
    }
    let listed: BTreeSet<&str> = k.resources.iter().map(String::as_str).collect();
    assert_eq!(
        listed.len(),
        k.resources.len(),
        "a resource is listed twice"
    );
    for entry in std::fs::read_dir(kube_dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let accounted = name == "kustomization.yaml"
            || name == ".gitignore"
            || listed.contains(name.as_str())
            || generated.contains(&name);
        assert!(
            accounted,
            "deploy/kubernetes/{name} is not listed in kustomization.yaml"
        );
    }
    for r in &listed {
        assert!(
            kube_dir().join(r).is_file(),
            "listed resource {r} is missing"
        );
    }
    // Labels must stay out of selectors: a DaemonSet's selector is immutable.
    assert!(k
        .labels
        .iter()
        .all(|l| !l.include_selectors && !l.pairs.is_empty()));
    // The images entry rewrites the DaemonSet's image.
    let image = m.agent().image.clone().unwrap();
    let entry = k
        .images
        .iter()
        .find(|i| i.name == image)
        .unwrap_or_else(|| panic!("no kustomize images entry for {image:?}"));
    assert!(entry.new_name.is_some() && entry.new_tag.is_some());
    // Everything namespaced lives in the kustomization's namespace.
    for (file, o) in &m.objects {
        let (kind, ns) = match o {
            Object::Namespace(n) => {
                assert_eq!(n.metadata.name.as_deref(), Some(k.namespace.as_str()));
                continue;
            }
            Object::ClusterRole(_) | Object::ClusterRoleBinding(_) => continue,
            Object::ServiceAccount(s) => ("ServiceAccount", &s.metadata.namespace),
            Object::DaemonSet(d) => ("DaemonSet", &d.metadata.namespace),
            Object::Service(s) => ("Service", &s.metadata.namespace),
            Object::Secret(s) => ("Secret", &s.metadata.namespace),
        };
        assert_eq!(
            ns.as_deref(),
            Some(k.namespace.as_str()),
            "{file}: {kind} namespace"
        );
    }
}

#[test]
fn daemonset_sees_the_node_and_is_not_privileged() {
    let m = Manifests::load();
    let spec = m.pod_spec();
    assert_eq!(spec.host_pid, Some(true), "hostPID");
    assert_ne!(spec.host_network, Some(true), "no hostNetwork");
    assert_ne!(spec.host_ipc, Some(true), "no hostIPC");
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let sc = c.security_context.as_ref().expect("securityContext");
        assert_ne!(sc.privileged, Some(true), "{}: privileged", c.name);
    }
    let sc = m.agent().security_context.as_ref().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.run_as_user, Some(0), "capabilities apply to root only");
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    let added: BTreeSet<&str> = caps.add.iter().flatten().map(String::as_str).collect();
    let want: BTreeSet<&str> = AGENT_CAPABILITIES.iter().copied().collect();
    assert_eq!(added, want, "added capabilities");
    assert!(!added.contains("SYS_ADMIN"), "SYS_ADMIN is not needed");
    assert!(
        sc.seccomp_profile.is_some(),
        "seccomp profile chosen explicitly"
    );

    // Each added capability is explained by a comment right above it.
    let text = read(&kube_dir().join("daemonset.yaml"));
    let lines: Vec<&str> = text.lines().collect();
    for cap in AGENT_CAPABILITIES {
        let at = lines
            .iter()
            .position(|l| l.trim() == format!("- {cap}"))
            .unwrap_or_else(|| panic!("capability {cap} not listed one per line"));
        assert!(
            lines[at - 1].trim_start().starts_with('#'),
            "capability {cap} has no comment saying why"
        );
    }
}

#[test]
fn daemonset_node_name_probes_resources_and_rollout() {
    let m = Manifests::load();
    let c = m.agent();
    let env = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "NODE_NAME")
        .expect("NODE_NAME env");
    let field = env
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .expect("NODE_NAME from the downward API");
    assert_eq!(field.field_path, "spec.nodeName");

    let http_port = c
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("http"))
        .expect("a container port named http")
        .container_port;
    for (name, probe) in [
        ("readinessProbe", &c.readiness_probe),
        ("livenessProbe", &c.liveness_probe),
    ] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("{name}: httpGet"));
        assert_eq!(get.path.as_deref(), Some("/healthz"), "{name} path");
        let port_ok = match &get.port {
            IntOrString::String(s) => s == "http",
            IntOrString::Int(p) => *p == http_port,
        };
        assert!(port_ok, "{name} port");
    }

    let r = c.resources.as_ref().expect("resources");
    let (req, lim) = (r.requests.clone().unwrap(), r.limits.clone().unwrap());
    for res in ["cpu", "memory"] {
        let (rq, lm) = (
            quantity(&req.get(res).unwrap_or_else(|| panic!("request {res}")).0),
            quantity(&lim.get(res).unwrap_or_else(|| panic!("limit {res}")).0),
        );
        assert!(rq > 0.0 && rq <= lm, "{res}: request {rq} <= limit {lm}");
    }
    // The goal is <= 2% of a core on average: the request may not claim more
    // than a tenth of a core.
    assert!(quantity(&req["cpu"].0) <= 0.1);

    let ds = &m.daemonset().spec;
    let strategy = ds.update_strategy.as_ref().expect("updateStrategy");
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    assert!(strategy
        .rolling_update
        .as_ref()
        .and_then(|r| r.max_unavailable.as_ref())
        .is_some());
    let selector = ds.selector.match_labels.clone().unwrap_or_default();
    assert!(
        matches_selector(&selector, &m.pod_labels()),
        "DaemonSet selector matches its pod labels"
    );
    // Runs on every node: a toleration for every taint.
    assert!(
        m.pod_spec()
            .tolerations
            .iter()
            .flatten()
            .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none()),
        "tolerate all taints"
    );
}

#[test]
fn daemonset_args_follow_the_agent_contract_and_match_the_mounts() {
    let m = Manifests::load();
    let flags = m.agent_args();
    // The profiler's own parser accepts them, values included (durations,
    // sizes, the listen address).
    let args = m.agent().args.clone().unwrap_or_default();
    let parsed = <profiler_user::cli::Cli as clap::Parser>::try_parse_from(
        std::iter::once("profiler".to_string()).chain(args.iter().cloned()),
    )
    .unwrap_or_else(|e| panic!("profiler {}: {e}", args.join(" ")));
    let profiler_user::cli::Cmd::Agent(parsed) = parsed.command else {
        panic!("the DaemonSet does not run `profiler agent`")
    };
    assert!(
        parsed.token_file.is_some(),
        "the agent off loopback needs --token-file"
    );

    // The listener is on the pod network, so a token is required, and it is
    // the file the Secret provides.
    let listen = one(&flags, "listen");
    assert!(!listen.starts_with("127.") && !listen.starts_with("localhost"));
    let token = Path::new(one(&flags, "token-file"));
    let (volume, ro) = m.mount_at(token.parent().unwrap().to_str().unwrap());
    assert!(ro, "token mount is read-only");
    let secret = volume
        .secret
        .as_ref()
        .expect("the token volume is a Secret");
    let generator = m
        .kustomization
        .secret_generator
        .iter()
        .find(|g| Some(&g.name) == secret.secret_name.as_ref())
        .expect("the token Secret comes from the kustomization's secretGenerator");
    let key = token.file_name().unwrap().to_str().unwrap();
    match &secret.items {
        Some(items) => assert!(items.iter().any(|i| i.path == key)),
        None => assert!(
            generator.keys().iter().any(|(k, _)| k == key),
            "the Secret has no key {key}"
        ),
    }
    assert_eq!(generator.type_.as_deref().unwrap_or("Opaque"), "Opaque");

    // Host paths: the store read-write, the kernel's files read-only.
    let host = |dir: &str| -> (String, bool) {
        let (v, ro) = m.mount_at(dir);
        let hp = v
            .host_path
            .as_ref()
            .unwrap_or_else(|| panic!("{dir} is not a hostPath"));
        (hp.path.clone(), ro)
    };
    let store = one(&flags, "store");
    assert!(!host(store).1, "the store is writable");
    assert_eq!(
        host(one(&flags, "cgroup-root")),
        ("/sys/fs/cgroup".into(), true)
    );
    assert_eq!(
        host("/sys/kernel/tracing"),
        ("/sys/kernel/tracing".into(), true)
    );
    assert_eq!(host("/sys/kernel/btf"), ("/sys/kernel/btf".into(), true));
    // Every mount names a volume; the only writable ones are the store and
    // scratch space.
    for vm in m.agent().volume_mounts.iter().flatten() {
        let v = m.volume(&vm.name);
        if vm.read_only != Some(true) {
            assert!(
                vm.mount_path == store || v.empty_dir.is_some(),
                "{} is writable",
                vm.mount_path
            );
        }
    }

    // The API port is the container port the Services target.
    let port = port_of_listen(listen);
    let http = m
        .agent()
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("http"))
        .unwrap();
    assert_eq!(http.container_port, port, "--listen port = containerPort");
}

#[test]
fn services_select_the_agent_pods_on_the_api_port() {
    let m = Manifests::load();
    let labels = m.pod_labels();
    let port = port_of_listen(one(&m.agent_args(), "listen"));
    let services = m.services();
    assert!(
        services
            .iter()
            .any(|s| s.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")),
        "a headless Service so fetch can reach every agent pod"
    );
    for s in services {
        let name = s.metadata.name.clone().unwrap_or_default();
        let spec = s.spec.as_ref().unwrap();
        let selector = spec.selector.clone().unwrap_or_default();
        assert!(
            matches_selector(&selector, &labels),
            "{name}: selector {selector:?} does not match the agent pods {labels:?}"
        );
        for p in spec.ports.iter().flatten() {
            let target_ok = match &p.target_port {
                None => p.port == port,
                Some(IntOrString::Int(t)) => *t == port,
                Some(IntOrString::String(n)) => n == "http",
            };
            assert!(target_ok, "{name}: port {} targets the API port", p.port);
        }
    }
}

#[test]
fn rbac_is_read_only_on_pods_for_an_existing_service_account() {
    let m = Manifests::load();
    let sa_name = m
        .pod_spec()
        .service_account_name
        .clone()
        .expect("serviceAccountName");
    let ns = m.daemonset().metadata.namespace.clone();
    assert!(
        m.objects
            .iter()
            .any(|(_, o)| matches!(o, Object::ServiceAccount(sa)
            if sa.metadata.name.as_ref() == Some(&sa_name) && sa.metadata.namespace == ns)),
        "ServiceAccount {sa_name} does not exist"
    );
    let allowed: BTreeSet<&str> = ["get", "list", "watch"].into();
    let mut roles = BTreeSet::new();
    for (_, o) in &m.objects {
        if let Object::ClusterRole(r) = o {
            roles.insert(r.metadata.name.clone().unwrap());
            assert!(r.aggregation_rule.is_none());
            for rule in r.rules.iter().flatten() {
                assert_eq!(rule.api_groups.as_deref(), Some(&[String::new()][..]));
                assert_eq!(rule.resources.as_deref(), Some(&["pods".to_string()][..]));
                assert!(rule.non_resource_urls.is_none());
                for v in &rule.verbs {
                    assert!(allowed.contains(v.as_str()), "verb {v} on pods");
                }
            }
        }
    }
    let mut bound = false;
    for (_, o) in &m.objects {
        if let Object::ClusterRoleBinding(b) = o {
            assert_eq!(b.role_ref.kind, "ClusterRole");
            assert!(roles.contains(&b.role_ref.name), "bound role exists");
            for s in b.subjects.iter().flatten() {
                assert_eq!(s.kind, "ServiceAccount");
                bound |= s.name == sa_name && s.namespace == ns;
            }
        }
    }
    assert!(
        bound,
        "the agent's ServiceAccount is bound to the ClusterRole"
    );
}

// ---------------------------------------------------------------------------
// Command lines in CI scripts

/// Flags of subcommand `sub` of a real command line (`clap::CommandFactory`):
/// (name without dashes, takes a value), long and short names both listed,
/// `help` and `h` included; every name of `expected` must be there.
fn subcommand_flags(mut cli: clap::Command, sub: &str, expected: &[&str]) -> Vec<(String, bool)> {
    cli.build();
    let bin = cli.get_name().to_string();
    let cmd = cli
        .find_subcommand(sub)
        .unwrap_or_else(|| panic!("{bin} has no subcommand {sub}"));
    let mut flags = vec![("help".to_string(), false), ("h".to_string(), false)];
    for arg in cmd.get_arguments() {
        let takes_value = arg.get_action().takes_values();
        if let Some(long) = arg.get_long() {
            flags.push((long.to_string(), takes_value));
        }
        if let Some(short) = arg.get_short() {
            flags.push((short.to_string(), takes_value));
        }
    }
    let names: BTreeSet<&str> = flags.iter().map(|(n, _)| n.as_str()).collect();
    for e in expected {
        assert!(names.contains(e), "{bin} {sub}: no flag --{e}");
    }
    flags
}

/// `profdiff gate` flags, from the real command (`diff::cli`).
fn profdiff_gate_flags() -> Vec<(String, bool)> {
    use clap::CommandFactory as _;
    subcommand_flags(
        diff::cli::Cli::command(),
        "gate",
        &[
            "baseline",
            "b",
            "candidate",
            "c",
            "budgets",
            "json",
            "markdown",
            "html",
        ],
    )
}

/// Flags of `profiler SUB`; see [`subcommand_flags`].
fn profiler_flags(sub: &str, expected: &[&str]) -> Vec<(String, bool)> {
    use clap::CommandFactory as _;
    subcommand_flags(profiler_user::cli::Cli::command(), sub, expected)
}

/// `profiler agent` flags.
fn agent_flags() -> Vec<(String, bool)> {
    profiler_flags("agent", AGENT_CONTRACT)
}

/// `profiler fetch` flags.
fn fetch_table() -> Vec<(String, bool)> {
    profiler_flags("fetch", FETCH_CONTRACT)
}

/// Shell words of a line, quotes removed (no expansion).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for ch in line.chars() {
        match quote {
            Some(q) if ch == q => quote = None,
            Some(_) => cur.push(ch),
            None if ch == '"' || ch == '\'' => {
                quote = Some(ch);
                any = true;
            }
            None if ch.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            None if ch == '#' && cur.is_empty() && !any => break,
            None => {
                cur.push(ch);
                any = true;
            }
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The argument words a script gives to `tool sub`: the words after it on
/// the invoking line (continuations joined, up to `;`, `|` or `&&`), plus
/// those of `set -- ...` and `array+=(...)` lines, which build argument
/// lists. Returns (invocations found, words).
fn script_args(script: &str, tool: &str, sub: &str) -> (usize, Vec<String>) {
    let joined = script.replace("\\\n", " ");
    let mut invocations = 0;
    let mut args = Vec::new();
    for line in joined.lines() {
        let w = words(line);
        let mut pos = 0;
        while pos + 1 < w.len() {
            if w[pos] == tool && w[pos + 1] == sub {
                invocations += 1;
                args.extend(
                    w[pos + 2..]
                        .iter()
                        .take_while(|a| !matches!(a.as_str(), ";" | "|" | "&&" | "||"))
                        .cloned(),
                );
            }
            pos += 1;
        }
        if w.len() > 2 && w[0] == "set" && w[1] == "--" {
            args.extend(w[2..].iter().cloned());
        }
        if let Some(first) = w.first() {
            if first.contains("+=(") {
                let rest = line.split_once("+=(").unwrap().1;
                args.extend(words(rest.trim_end().trim_end_matches(')')));
            }
        }
    }
    (invocations, args)
}

/// Check every flag-looking word against `table`; returns the flags used.
fn check_flags(words: &[String], table: &[(String, bool)], what: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let mut it = words.iter();
    while let Some(w) = it.next() {
        let is_flag = w.starts_with('-')
            && w.len() > 1
            && w[1..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '-')
            && w != "--";
        if !is_flag {
            continue;
        }
        let body = w.trim_start_matches('-');
        let (name, inline) = match body.split_once('=') {
            Some((n, _)) => (n, true),
            None => (body, false),
        };
        let takes = table
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("{what}: unknown flag {w}"));
        used.insert(name.to_string());
        if takes && !inline {
            it.next(); // the value, which may itself start with '-' (`-5m`)
        }
    }
    used
}

/// Check one script's `profiler fetch` and `profdiff gate` invocations.
/// Returns (fetches, gates) counted.
fn check_script(script: &str, what: &str) -> (usize, usize) {
    let (fetches, fargs) = script_args(script, "profiler", "fetch");
    let (gates, gargs) = script_args(script, "profdiff", "gate");
    assert!(
        fetches == 0 || gates == 0,
        "{what}: one tool per script, so argument lists cannot mix"
    );
    if fetches > 0 {
        let used = check_flags(&fargs, &fetch_table(), &format!("{what}: profiler fetch"));
        for required in ["agent", "pod", "from", "o", "token-file"] {
            assert!(
                used.contains(required),
                "{what}: profiler fetch without --{required}"
            );
        }
    }
    if gates > 0 {
        let used = check_flags(
            &gargs,
            &profdiff_gate_flags(),
            &format!("{what}: profdiff gate"),
        );
        assert!(
            used.contains("b") || used.contains("baseline"),
            "{what}: gate without -b"
        );
        assert!(
            used.contains("c") || used.contains("candidate"),
            "{what}: gate without -c"
        );
        for report in ["json", "markdown", "html"] {
            assert!(
                used.contains(report),
                "{what}: gate writes no --{report} report"
            );
        }
    }
    (fetches, gates)
}

#[test]
fn flag_checker_rejects_unknown_flags() {
    let ok = "profdiff gate -b base/ -c cand/ --json r.json --markdown r.md --html r.html";
    check_script(ok, "ok");
    let bad = std::panic::catch_unwind(|| check_script(&format!("{ok} --fail-fast"), "bad"));
    assert!(bad.is_err(), "--fail-fast is no profdiff gate flag");
    let bad = std::panic::catch_unwind(|| {
        check_script(
            "set -- --agent http://a:7070\nprofiler fetch \"$@\" --pod a/b --since -5m -o x --token-file t",
            "bad",
        )
    });
    assert!(bad.is_err(), "--since is no profiler fetch flag");
    // A value that looks like a flag is a value.
    let (_, args) = script_args(
        "profiler fetch --agent u --pod a/b --from -5m --to now -o x --token-file t",
        "profiler",
        "fetch",
    );
    check_flags(&args, &fetch_table(), "values");
}

// ---------------------------------------------------------------------------
// Tekton

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TektonTask {
    api_version: String,
    kind: String,
    metadata: TektonMetadata,
    spec: TaskSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TektonMetadata {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TaskSpec {
    description: Option<String>,
    params: Vec<TaskParam>,
    #[serde(default)]
    workspaces: Vec<TaskWorkspace>,
    #[serde(default)]
    results: Vec<TaskResult>,
    steps: Vec<TaskStep>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskParam {
    name: String,
    #[serde(rename = "type")]
    type_: Option<String>,
    description: Option<String>,
    default: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TaskWorkspace {
    name: String,
    description: Option<String>,
    #[serde(default)]
    optional: bool,
    #[serde(default)]
    read_only: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskResult {
    name: String,
    #[serde(rename = "type")]
    type_: Option<String>,
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TaskStep {
    name: String,
    image: String,
    script: Option<String>,
    #[serde(default)]
    env: Vec<StepEnv>,
    working_dir: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepEnv {
    name: String,
    value: String,
}

/// `$(prefix.NAME...)` references in `text`: the NAMEs.
fn references(text: &str, prefix: &str) -> BTreeSet<String> {
    let pat = format!("$({prefix}.");
    text.match_indices(&pat)
        .map(|(i, _)| {
            text[i + pat.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn tekton_task_is_typed_and_consistent() {
    let path = deploy_dir().join("ci/tekton-task.yaml");
    let text = read(&path);
    let mut docs = documents(&text, "tekton-task.yaml");
    assert_eq!(docs.len(), 1);
    let task: TektonTask =
        strict(docs.remove(0), "tekton-task.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(task.api_version, "tekton.dev/v1");
    assert_eq!(task.kind, "Task");
    assert!(!task.metadata.name.is_empty());
    assert!(task.spec.description.is_some());
    assert!(task
        .metadata
        .labels
        .contains_key("app.kubernetes.io/part-of"));
    assert!(task
        .metadata
        .annotations
        .contains_key("tekton.dev/displayName"));

    // Every reference resolves and every declaration is used.
    let declared =
        |names: Vec<&String>| -> BTreeSet<String> { names.into_iter().cloned().collect() };
    let params = declared(task.spec.params.iter().map(|p| &p.name).collect());
    let workspaces = declared(task.spec.workspaces.iter().map(|w| &w.name).collect());
    let results = declared(task.spec.results.iter().map(|r| &r.name).collect());
    let body = &text[text.find("steps:").unwrap()..];
    assert_eq!(references(body, "params"), params, "params used = declared");
    assert_eq!(
        references(body, "workspaces"),
        workspaces,
        "workspaces used = declared"
    );
    assert_eq!(
        references(body, "results"),
        results,
        "results written = declared"
    );
    for p in &task.spec.params {
        assert!(p.type_.as_deref().unwrap_or("string") == "string");
        assert!(
            p.description.is_some() || p.default.is_some(),
            "param {} undocumented",
            p.name
        );
    }
    for r in &task.spec.results {
        assert!(
            r.description.is_some() && r.type_.is_some(),
            "result {}",
            r.name
        );
    }
    assert!(task
        .spec
        .workspaces
        .iter()
        .any(|w| w.name == "profiles" && !w.optional && !w.read_only));
    assert!(task.spec.workspaces.iter().all(|w| w.description.is_some()));

    // Scripts: a shebang, params only through the environment, real flags.
    let mut names = BTreeSet::new();
    let (mut fetches, mut gates) = (0, 0);
    for step in &task.spec.steps {
        assert!(names.insert(step.name.clone()), "step {} twice", step.name);
        assert_eq!(step.image, "$(params.image)");
        assert!(step.working_dir.is_none());
        let script = step
            .script
            .as_deref()
            .unwrap_or_else(|| panic!("step {}: script", step.name));
        assert!(
            script.starts_with("#!/bin/sh\n"),
            "step {}: shebang",
            step.name
        );
        assert!(
            references(script, "params").is_empty(),
            "step {}: params are spliced into the script; pass them through env",
            step.name
        );
        let env: BTreeSet<&str> = step.env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(env.len(), step.env.len(), "step {}: env twice", step.name);
        for e in &step.env {
            assert!(
                script.contains(&format!("${}", e.name))
                    || script.contains(&format!("${{{}", e.name)),
                "step {}: env {} unused (value {})",
                step.name,
                e.name,
                e.value
            );
        }
        let (f, g) = check_script(script, &format!("tekton step {}", step.name));
        fetches += f;
        gates += g;
    }
    assert!(fetches >= 1 && gates == 1, "the Task fetches and gates");
    // The last step fails the Task with the gate's exit code.
    let last = task.spec.steps.last().unwrap().script.as_deref().unwrap();
    assert!(last.contains("exit \"$code\""));
}

// ---------------------------------------------------------------------------
// GitHub Actions

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Workflow {
    name: String,
    on: WorkflowOn,
    #[serde(default)]
    permissions: BTreeMap<String, String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    jobs: BTreeMap<String, Job>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkflowOn {
    pull_request: PullRequestTrigger,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PullRequestTrigger {
    #[serde(default)]
    branches: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Job {
    #[serde(rename = "runs-on")]
    runs_on: String,
    #[serde(rename = "timeout-minutes")]
    timeout_minutes: Option<u32>,
    steps: Vec<WorkflowStep>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkflowStep {
    name: String,
    id: Option<String>,
    uses: Option<String>,
    run: Option<String>,
    #[serde(default)]
    with: BTreeMap<String, String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(rename = "if")]
    if_: Option<String>,
    #[serde(rename = "working-directory")]
    working_directory: Option<String>,
}

#[test]
fn github_workflow_is_typed_and_consistent() {
    let path = deploy_dir().join("ci/github-actions.yml");
    let text = read(&path);
    let mut docs = documents(&text, "github-actions.yml");
    assert_eq!(docs.len(), 1);
    let wf: Workflow =
        strict(docs.remove(0), "github-actions.yml").unwrap_or_else(|e| panic!("{e}"));
    assert!(!wf.name.is_empty());
    assert!(!wf.on.pull_request.branches.is_empty());
    assert_eq!(
        wf.permissions.get("contents").map(String::as_str),
        Some("read")
    );
    assert_eq!(wf.jobs.len(), 1);
    let job = wf.jobs.values().next().unwrap();
    assert!(job.runs_on.starts_with("ubuntu-"));
    assert!(job.timeout_minutes.is_some());

    // `${{ env.X }}` references resolve.
    for (i, _) in text.match_indices("env.") {
        if text[..i].ends_with("${{ ") {
            let name: String = text[i + 4..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(wf.env.contains_key(&name), "env.{name} is not declared");
        }
    }

    let (mut fetches, mut gates) = (0, 0);
    let mut ids = BTreeSet::new();
    for step in &job.steps {
        if let Some(id) = &step.id {
            assert!(ids.insert(id.clone()));
        }
        match (&step.uses, &step.run) {
            (Some(uses), None) => {
                let (_, version) = uses
                    .split_once('@')
                    .unwrap_or_else(|| panic!("step {}: {uses} not pinned", step.name));
                assert!(!version.is_empty());
            }
            (None, Some(run)) => {
                assert!(
                    step.with.is_empty(),
                    "step {}: `with` needs `uses`",
                    step.name
                );
                let (f, g) = check_script(run, &format!("workflow step {:?}", step.name));
                fetches += f;
                gates += g;
            }
            _ => panic!("step {}: exactly one of uses/run", step.name),
        }
        assert!(step.env.is_empty() || step.run.is_some());
        if let Some(dir) = &step.working_directory {
            assert!(dir.starts_with("profiler/"), "working-directory {dir}");
        }
    }
    assert!(fetches >= 1 && gates == 1, "the workflow fetches and gates");

    // The gate's Markdown ends up in the job summary and the reports in an
    // artifact, even when the gate step failed.
    let gate = job
        .steps
        .iter()
        .find(|s| {
            s.run
                .as_deref()
                .is_some_and(|r| r.contains("profdiff gate"))
        })
        .unwrap();
    let gate_args = script_args(gate.run.as_deref().unwrap(), "profdiff", "gate").1;
    let markdown = gate_args[gate_args.iter().position(|a| a == "--markdown").unwrap() + 1].clone();
    let after_gate: Vec<&WorkflowStep> = job
        .steps
        .iter()
        .skip_while(|s| !std::ptr::eq(*s, gate))
        .skip(1)
        .collect();
    let summary = after_gate
        .iter()
        .find(|s| {
            s.run
                .as_deref()
                .is_some_and(|r| r.contains("$GITHUB_STEP_SUMMARY"))
        })
        .expect("a step writes the job summary after the gate");
    assert!(summary.run.as_deref().unwrap().contains(&markdown));
    let upload = after_gate
        .iter()
        .find(|s| {
            s.uses
                .as_deref()
                .is_some_and(|u| u.starts_with("actions/upload-artifact@"))
        })
        .expect("the report is uploaded after the gate");
    let report_dir = Path::new(&markdown)
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(upload
        .with
        .get("path")
        .is_some_and(|p| p.contains(&report_dir)));
    for s in [summary, upload] {
        let cond = s.if_.as_deref().unwrap_or("");
        assert!(
            cond.contains("always()") || cond.contains("!cancelled()"),
            "step {} must run after a failed gate",
            s.name
        );
    }
    // The fetches authenticate with the token the kustomization deploys.
    assert!(text.contains("--token-file profiler/deploy/kubernetes/token"));
}
