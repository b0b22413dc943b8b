//! `cargo xtask setup`: install what a fresh machine lacks, idempotently,
//! saying what it does. Each step that cannot succeed stops with one line
//! naming what is missing and how to fix it.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};

/// Go toolchains tried, in order, after `$GO` and `go` on PATH.
const GO_CANDIDATES: &[&str] = &["/usr/lib/go-1.23/bin/go", "/usr/lib/go-1.19/bin/go"];
/// bpf-linker release known to build against LLVM 22 (nightly 1.97).
const BPF_LINKER_VERSION: &str = "0.13.0";

fn ok(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo")
        })
}

/// PATH with cargo's bin directory first (where bpf-linker is installed).
pub fn path_with_tools() -> std::ffi::OsString {
    let mut paths = vec![cargo_home().join("bin")];
    if let Some(p) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(paths).unwrap_or_default()
}

/// The Go binary the workloads build with, if any.
pub fn go_binary() -> Option<PathBuf> {
    if let Some(go) = std::env::var_os("GO") {
        return Some(PathBuf::from(go));
    }
    if ok(Command::new("go").arg("version")) {
        return Some(PathBuf::from("go"));
    }
    GO_CANDIDATES.iter().map(PathBuf::from).find(|p| p.exists())
}

fn nightly_sysroot() -> Result<PathBuf> {
    let out = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("the nightly toolchain is missing: run `rustup toolchain install nightly --profile minimal --component rust-src`")?;
    Ok(PathBuf::from(out.trim()))
}

fn step_nightly() -> Result<PathBuf> {
    if output(Command::new("rustc").args(["+nightly", "--version"])).is_none() {
        println!("setup: installing the nightly Rust toolchain (rustup toolchain install nightly)");
        crate::run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))
        .context(
            "cannot install the nightly toolchain: run `rustup toolchain install nightly` by hand",
        )?;
    }
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .unwrap_or_default();
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        println!("setup: adding rust-src to nightly (needed to build eBPF with -Z build-std=core)");
        crate::run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))
        .context("cannot add rust-src: run `rustup component add rust-src --toolchain nightly`")?;
    }
    nightly_sysroot()
}

fn step_bpf_linker(root: &Path, sysroot: &Path) -> Result<()> {
    let linker = cargo_home().join("bin").join("bpf-linker");
    if ok(Command::new(&linker).arg("--version")) {
        return Ok(());
    }
    let lib = sysroot.join("lib");
    let llvm = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so.") || (n.starts_with("libLLVM-") && n.ends_with(".so")))
        .with_context(|| {
            format!(
                "no libLLVM in {}: the nightly toolchain is incomplete; reinstall it",
                lib.display()
            )
        })?;
    // libLLVM.so.22.1-rust-... or libLLVM-22-rust-...so
    let major: String = llvm
        .trim_start_matches("libLLVM.so.")
        .trim_start_matches("libLLVM-")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    if major.is_empty() {
        bail!("cannot tell the LLVM version of {llvm}");
    }
    let prefix = crate::target_dir(root).join("llvm-prefix");
    std::fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib").join("libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(lib.join(&llvm), &link)
        .with_context(|| format!("linking {}", link.display()))?;
    println!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against the nightly toolchain's LLVM {major} ({llvm}); this takes a few minutes"
    );
    let rpath = format!("-C link-arg=-Wl,-rpath,{}", lib.display());
    crate::run(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                &format!("llvm-{major}"),
            ])
            .env("LLVM_PREFIX", &prefix)
            .env("LD_LIBRARY_PATH", &lib)
            .env("RUSTFLAGS", rpath),
    )
    .context("building bpf-linker failed; see the output above (needs the crates.io registry and a C++ compiler)")?;
    if !ok(Command::new(&linker).arg("--version")) {
        bail!(
            "bpf-linker was installed but does not run: check `ldd {}`",
            linker.display()
        );
    }
    Ok(())
}

fn apt_install(packages: &[&str]) -> bool {
    ok(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn has_backports() -> bool {
    std::fs::read_to_string("/etc/apt/sources.list")
        .unwrap_or_default()
        .contains("bookworm-backports")
        || std::fs::read_dir("/etc/apt/sources.list.d")
            .map(|rd| {
                rd.flatten().any(|e| {
                    std::fs::read_to_string(e.path())
                        .unwrap_or_default()
                        .contains("bookworm-backports")
                })
            })
            .unwrap_or(false)
}

/// Go 1.23 (workloads, `go tool pprof`), and Go 1.19, 1.21 and 1.22 (the
/// Go-runtime probe tests cover every version; 1.21 and 1.22 come from
/// bookworm-backports) from Debian.
fn step_go() -> Result<()> {
    let want: Vec<(&str, &str)> = [
        ("golang-1.23-go", "/usr/lib/go-1.23/bin/go"),
        ("golang-1.19-go", "/usr/lib/go-1.19/bin/go"),
        ("golang-1.21-go", "/usr/lib/go-1.21/bin/go"),
        ("golang-1.22-go", "/usr/lib/go-1.22/bin/go"),
    ]
    .into_iter()
    .filter(|(_, bin)| !Path::new(bin).exists())
    .collect();
    if want.is_empty() {
        return Ok(());
    }
    if Command::new("apt-get").arg("--version").output().is_err() {
        if go_binary().is_some() {
            println!(
                "setup: apt-get unavailable; using {:?} (Go 1.19 tests may skip)",
                go_binary()
            );
            return Ok(());
        }
        bail!("no Go toolchain found and apt-get is unavailable: install Go 1.19+ and set GO=/path/to/go");
    }
    if !has_backports() {
        let sources = Path::new("/etc/apt/sources.list.d/bookworm-backports.sources");
        println!("setup: adding the bookworm-backports apt suite (for golang-1.23-go)");
        std::fs::write(
            sources,
            "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
        )
        .with_context(|| format!("writing {} (run setup as root)", sources.display()))?;
    }
    println!("setup: apt-get update");
    let _ = ok(Command::new("apt-get").arg("update"));
    for (pkg, bin) in want {
        println!("setup: installing {pkg}");
        if !apt_install(&[pkg]) || !Path::new(bin).exists() {
            bail!("cannot install {pkg}: run `apt-get update && apt-get install {pkg}` (bookworm-backports for 1.21, 1.22 and 1.23) or set GO=/path/to/go");
        }
    }
    Ok(())
}

fn step_tools() {
    // bpftool reads per-program run time for the overhead benchmark; optional.
    if !ok(Command::new("bpftool").arg("version")) && Path::new("/usr/bin/apt-get").exists() {
        println!("setup: installing bpftool (optional, for benchmark figures)");
        if !apt_install(&["bpftool"]) {
            let _ = ok(Command::new("apt-get").arg("update"));
            if !apt_install(&["bpftool"]) {
                println!(
                    "setup: bpftool unavailable; benchmarks read run times from /proc instead"
                );
            }
        }
    }
}

/// Browsers the HTML report's test looks for (diff/tests/html_browser.rs).
const BROWSERS: &[&str] = &["chromium", "chromium-browser", "google-chrome"];

/// Headless Chromium for the HTML report's browser test, from Debian.
fn step_chromium() -> Result<()> {
    if std::env::var_os("CHROMIUM").is_some()
        || BROWSERS
            .iter()
            .any(|b| ok(Command::new(b).arg("--version")))
    {
        return Ok(());
    }
    if !Path::new("/usr/bin/apt-get").exists() {
        bail!("no chromium found and apt-get is unavailable: install Chromium and set CHROMIUM=/path/to/chromium (the HTML report test needs it)");
    }
    println!("setup: installing chromium (the HTML report's browser test)");
    if !apt_install(&["chromium"]) {
        let _ = ok(Command::new("apt-get").arg("update"));
        if !apt_install(&["chromium"]) {
            bail!("cannot install chromium: run `apt-get update && apt-get install -y chromium` or set CHROMIUM=/path/to/chromium");
        }
    }
    if !ok(Command::new("chromium").arg("--version")) {
        bail!("chromium was installed but does not run: try `chromium --headless --no-sandbox --version`");
    }
    Ok(())
}

fn step_tracefs() -> Result<()> {
    if Path::new("/sys/kernel/tracing/events").exists() {
        return Ok(());
    }
    println!("setup: mounting tracefs at /sys/kernel/tracing");
    crate::run(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]))
        .context("cannot mount tracefs: run `mount -t tracefs nodev /sys/kernel/tracing` as root")
}

/// Run every set-up step.
pub fn setup(root: &Path) -> Result<()> {
    if !ok(Command::new("cc").arg("--version")) {
        bail!("no C compiler (cc): run `apt-get install gcc` (the C test program and bpf-linker need it)");
    }
    let sysroot = step_nightly()?;
    step_bpf_linker(root, &sysroot)?;
    step_go()?;
    step_tools();
    step_chromium()?;
    step_tracefs()?;
    println!("setup: ready (nightly rust-src, bpf-linker, Go, chromium, tracefs)");
    Ok(())
}
