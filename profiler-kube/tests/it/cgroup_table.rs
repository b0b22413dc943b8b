//! `tests/data/cgroup-paths.tsv`: cgroup paths and the identity each must
//! parse to, also checked through `/proc/PID/cgroup` v1 and v2 lines.

use profiler_kube::cgroup::{parse_cgroup_path, parse_proc_cgroup, ContainerRef};

const TABLE: &str = include_str!("../data/cgroup-paths.tsv");

fn opt(field: &str) -> Option<String> {
    (field != "-").then(|| field.to_string())
}

/// The expected fields of a `ContainerRef`, in the table's column order.
fn fields(c: &ContainerRef) -> Vec<Option<String>> {
    vec![
        Some(c.pod_uid.clone()),
        c.container_id.clone(),
        Some(format!("{:?}", c.qos)),
        Some(format!("{:?}", c.driver).to_lowercase()),
        Some(c.runtime.to_string()),
        Some(c.pod_cgroup.clone()),
        c.container_cgroup.clone(),
        c.conmon_for.clone(),
    ]
}

fn rows() -> Vec<(usize, &'static str, Vec<Option<String>>)> {
    TABLE
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.starts_with('#'))
        .map(|(i, line)| {
            let cols: Vec<&str> = line.split('\t').collect();
            assert_eq!(cols.len(), 9, "line {}: {line:?}", i + 1);
            (i + 1, cols[0], cols[1..].iter().map(|c| opt(c)).collect())
        })
        .collect()
}

#[test]
fn cgroup_paths_table() {
    let rows = rows();
    assert!(rows.len() >= 60, "the table shrank to {} rows", rows.len());
    let mut failures = Vec::new();
    for (line, path, want) in &rows {
        let got = parse_cgroup_path(path);
        let ok = match &got {
            None => want[0].is_none(),
            Some(c) => fields(c) == *want,
        };
        if !ok {
            failures.push(format!(
                "line {line}: {path:?}\n  want {want:?}\n  got  {:?}",
                got.as_ref().map(fields)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn cgroup_paths_table_via_proc_cgroup() {
    for (line, path, _) in rows() {
        let direct = parse_cgroup_path(path);
        let v2 = format!("0::{path}\n");
        assert_eq!(parse_proc_cgroup(&v2), direct, "line {line}: v2");
        let v1 = format!(
            "12:pids:{path}\n11:cpu,cpuacct:{path}\n4:devices:{path}\n1:name=systemd:{path}\n"
        );
        assert_eq!(parse_proc_cgroup(&v1), direct, "line {line}: v1");
        // Hybrid host: v1 controllers name the pod, the unified line only
        // the runtime's service.
        let hybrid = format!("12:memory:{path}\n0::/system.slice/containerd.service\n");
        assert_eq!(parse_proc_cgroup(&hybrid), direct, "line {line}: hybrid");
    }
}
