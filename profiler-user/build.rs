//! Builds the eBPF object (`profiler-ebpf`) for bpfel-unknown-none with
//! aya-build, so `cargo build` always embeds a current object.
fn main() -> anyhow::Result<()> {
    let manifest = std::env::var("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&manifest)
        .parent()
        .expect("crate lives in the workspace")
        .join("profiler-ebpf");
    let root = root.to_str().expect("utf-8 path");
    // Benchmark only: the per-phase timing of `cpu_sample`.
    let features: &[&str] = if std::env::var_os("CARGO_FEATURE_BENCH_PHASES").is_some() {
        &["phase-timing"]
    } else {
        &[]
    };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "profiler-ebpf",
            root_dir: root,
            features,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
