//! Builds the test and demo workloads under `tests/workloads/` into
//! `tests/workloads/bin/`.
//!
//! Go programs (one `main` package per directory, one Go module for all of
//! them) are built with the Go toolchain found by [`find_go`]; the C program
//! with `cc` and the single-file Rust program with `rustc`. All keep frame
//! pointers and debug info so the profiler can unwind and symbolize them.
//! Builds are incremental: a program is rebuilt only when one of its sources
//! is newer than its binary.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};

/// Go programs the tests and demo rely on; [`go_programs`] adds any other
/// directory of `tests/workloads/` that holds a `main.go`.
const GO_PROGRAMS: &[&str] = &[
    "demo",
    "cpusplit",
    "syscalls",
    "exiter",
    "apiserver-sim",
    "controller-sim",
    "workbench-smoke",
    "regress",
];

/// Fallback Go toolchains tried after `$GO` and `go` on `PATH`.
const GO_FALLBACKS: &[&str] = &["/usr/lib/go-1.23/bin/go", "/usr/lib/go-1.19/bin/go"];

/// Builds every workload into `<root>/tests/workloads/bin/` and returns that
/// directory.
///
/// `root` is the workspace root. Binaries: `demo`, `cpusplit`, `syscalls`,
/// `exiter`, `apiserver-sim`, `controller-sim`, `workbench-smoke`, `regress` and any
/// other `tests/workloads/<dir>/main.go` (Go), `cprog` (C) and `rustprog`
/// (Rust). Prints one line per program it
/// (re)builds and nothing for programs that are up to date. Go's build cache
/// and GOPATH live under the Cargo target directory, so `$HOME` is not needed.
pub fn build_workloads(root: &Path) -> Result<PathBuf> {
    let src = root.join("tests").join("workloads");
    if !src.join("go.mod").is_file() {
        bail!(
            "workload sources not found: {} has no go.mod",
            src.display()
        );
    }
    let bin = src.join("bin");
    fs::create_dir_all(&bin).with_context(|| format!("create {}", bin.display()))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));

    // Go: every program depends on the whole module (shared internal packages).
    let mut go_sources = Vec::new();
    collect_files(
        &src,
        &bin,
        &mut |p| {
            p.extension().is_some_and(|e| e == "go") || p.file_name().is_some_and(|n| n == "go.mod")
        },
        &mut go_sources,
    )?;
    let go_newest = newest_mtime(&go_sources)?;
    let programs = go_programs(&src)?;
    let stale_go: Vec<&str> = programs
        .iter()
        .map(String::as_str)
        .filter(|name| is_stale(&bin.join(name), go_newest))
        .collect();
    if !stale_go.is_empty() {
        let go = find_go()?;
        let gocache = target.join("go-cache");
        let gopath = target.join("go-path");
        // One `go build` for all stale programs: `-o DIR/` writes each main
        // package to DIR/<last path element> and builds packages in parallel.
        let mut out_dir = bin.clone().into_os_string();
        out_dir.push("/");
        let mut cmd = Command::new(&go);
        cmd.current_dir(&src)
            .arg("build")
            .arg("-o")
            .arg(out_dir)
            .args(stale_go.iter().map(|name| format!("./{name}")))
            .env("GOCACHE", &gocache)
            .env("GOPATH", &gopath)
            .env("GOMODCACHE", gopath.join("pkg").join("mod"))
            .env("GOTOOLCHAIN", "local")
            .env("GOPROXY", "off")
            .env("GOFLAGS", "-mod=mod")
            .env("GOWORK", "off")
            .env("GO111MODULE", "on")
            .env("CGO_ENABLED", "0");
        run(
            cmd,
            &format!("go build of workloads {}", stale_go.join(", ")),
        )?;
        for name in stale_go {
            let out = bin.join(name);
            mark_built(&out)?;
            println!("built workload {name} -> {}", out.display());
        }
    }

    // C: cprog/hot.c.
    let c_src = src.join("cprog").join("hot.c");
    let c_out = bin.join("cprog");
    if is_stale(&c_out, newest_mtime(std::slice::from_ref(&c_src))?) {
        let cc = std::env::var_os("CC").unwrap_or_else(|| OsString::from("cc"));
        let mut cmd = Command::new(&cc);
        cmd.args(["-O2", "-g", "-fno-omit-frame-pointer", "-o"])
            .arg(&c_out)
            .arg(&c_src);
        run(
            cmd,
            "cc build of workload cprog (is a C compiler installed? run `cargo xtask setup`)",
        )?;
        mark_built(&c_out)?;
        println!("built workload cprog -> {}", c_out.display());
    }

    // Rust: rustprog/main.rs.
    let rs_src = src.join("rustprog").join("main.rs");
    let rs_out = bin.join("rustprog");
    if is_stale(&rs_out, newest_mtime(std::slice::from_ref(&rs_src))?) {
        let rustc = find_rustc();
        let mut cmd = Command::new(&rustc);
        cmd.args([
            "--edition",
            "2021",
            "-O",
            "-g",
            "-C",
            "force-frame-pointers=yes",
            "-o",
        ])
        .arg(&rs_out)
        .arg(&rs_src);
        run(cmd, "rustc build of workload rustprog")?;
        mark_built(&rs_out)?;
        println!("built workload rustprog -> {}", rs_out.display());
    }
    Ok(bin)
}

/// Names of the Go programs: [`GO_PROGRAMS`] plus every other direct
/// subdirectory of `src` with a `main.go`, sorted.
fn go_programs(src: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = GO_PROGRAMS.iter().map(|s| s.to_string()).collect();
    let entries = fs::read_dir(src).with_context(|| format!("read dir {}", src.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("read dir {}", src.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != "bin" && entry.path().join("main.go").is_file() && !names.contains(&name) {
            names.push(name);
        }
    }
    for name in GO_PROGRAMS {
        if !src.join(name).join("main.go").is_file() {
            bail!(
                "workload source {}/{name}/main.go is missing",
                src.display()
            );
        }
    }
    names.sort();
    Ok(names)
}

/// Sets `out`'s modification time to now. `go build` leaves an identical
/// binary untouched, which would otherwise keep it "stale" forever.
fn mark_built(out: &Path) -> Result<()> {
    // Read-only: a running binary cannot be opened for writing (ETXTBSY),
    // and futimens on a read-only descriptor is allowed for the owner.
    fs::File::open(out)
        .and_then(|f| f.set_modified(SystemTime::now()))
        .with_context(|| format!("update mtime of {}", out.display()))
}

/// Finds the Go toolchain: `$GO` if set, else `go` on `PATH`, else the
/// Debian toolchain paths in [`GO_FALLBACKS`].
fn find_go() -> Result<PathBuf> {
    if let Some(go) = std::env::var_os("GO") {
        let go = PathBuf::from(go);
        if is_executable(&go) || which(&go).is_some() {
            return Ok(go);
        }
        bail!(
            "$GO is set to {} but that is not an executable Go toolchain",
            go.display()
        );
    }
    if let Some(go) = which(Path::new("go")) {
        return Ok(go);
    }
    for cand in GO_FALLBACKS {
        let p = PathBuf::from(cand);
        if is_executable(&p) {
            return Ok(p);
        }
    }
    bail!(
        "Go toolchain not found ($GO unset, no `go` on PATH, none of {}); run `cargo xtask setup` to install it",
        GO_FALLBACKS.join(", ")
    )
}

/// Finds `rustc`: `$RUSTC`, else `rustc` on `PATH`, else the `rustc` next to
/// the `cargo` that runs xtask (`$CARGO`), else plain `rustc`.
fn find_rustc() -> OsString {
    if let Some(r) = std::env::var_os("RUSTC") {
        return r;
    }
    if which(Path::new("rustc")).is_some() {
        return OsString::from("rustc");
    }
    std::env::var_os("CARGO")
        .map(|c| PathBuf::from(c).with_file_name("rustc"))
        .filter(|p| is_executable(p))
        .map(PathBuf::into_os_string)
        .unwrap_or_else(|| OsString::from("rustc"))
}

/// Looks a bare command name up on `PATH`; returns paths with a separator as is.
fn which(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 {
        return is_executable(name).then(|| name.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs `cmd`; on failure returns an error with `what` and the tool's stderr.
fn run(mut cmd: Command, what: &str) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("{what}: cannot start {:?}", cmd.get_program()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!("{what} failed ({}): {}", out.status, stderr.trim());
    }
    Ok(())
}

/// Collects files under `dir` (recursively, skipping `skip`) that match `keep`.
fn collect_files(
    dir: &Path,
    skip: &Path,
    keep: &mut dyn FnMut(&Path) -> bool,
    out: &mut Vec<PathBuf>,
) -> Result<()> {
    let entries = fs::read_dir(dir).with_context(|| format!("read dir {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("read dir {}", dir.display()))?;
        let path = entry.path();
        let ty = entry
            .file_type()
            .with_context(|| format!("stat {}", path.display()))?;
        if ty.is_dir() {
            if path != skip {
                collect_files(&path, skip, keep, out)?;
            }
        } else if keep(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// Newest modification time among `files` (all must exist).
fn newest_mtime(files: &[PathBuf]) -> Result<SystemTime> {
    let mut newest = SystemTime::UNIX_EPOCH;
    for f in files {
        let m = fs::metadata(f)
            .and_then(|m| m.modified())
            .with_context(|| format!("stat workload source {}", f.display()))?;
        newest = newest.max(m);
    }
    Ok(newest)
}

/// True when `out` is missing or not newer than `newest_source`.
fn is_stale(out: &Path, newest_source: SystemTime) -> bool {
    match fs::metadata(out).and_then(|m| m.modified()) {
        Ok(built) => built <= newest_source,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xtask-workloads-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn missing_output_is_stale_and_fresh_output_is_not() {
        let d = scratch("stale");
        let src = d.join("a.go");
        fs::write(&src, "package main").unwrap();
        let newest = newest_mtime(std::slice::from_ref(&src)).unwrap();
        let out = d.join("bin-a");
        assert!(is_stale(&out, newest));
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&out, "binary").unwrap();
        assert!(!is_stale(&out, newest));
        // Touching the source after the build makes the output stale again.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&src, "package main // edited").unwrap();
        assert!(is_stale(&out, newest_mtime(&[src]).unwrap()));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn collect_skips_the_bin_dir() {
        let d = scratch("collect");
        fs::create_dir_all(d.join("x")).unwrap();
        fs::create_dir_all(d.join("bin")).unwrap();
        fs::write(d.join("x/main.go"), "").unwrap();
        fs::write(d.join("bin/stale.go"), "").unwrap();
        fs::write(d.join("x/notes.txt"), "").unwrap();
        let mut got = Vec::new();
        collect_files(
            &d,
            &d.join("bin"),
            &mut |p| p.extension().is_some_and(|e| e == "go"),
            &mut got,
        )
        .unwrap();
        assert_eq!(got, vec![d.join("x/main.go")]);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn missing_source_is_an_error_naming_the_file() {
        let err = newest_mtime(&[PathBuf::from("/nonexistent/w.go")]).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/w.go"), "{err:#}");
    }

    /// Builds the real workloads with the real toolchains, then checks that a
    /// second call is a no-op (binaries untouched).
    #[test]
    fn builds_all_workloads_incrementally() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let bin = build_workloads(root).expect("build workloads");
        let mut names = go_programs(&root.join("tests/workloads")).unwrap();
        assert!(GO_PROGRAMS.iter().all(|p| names.iter().any(|n| n == p)));
        names.extend(["cprog".to_string(), "rustprog".to_string()]);
        let mtimes: Vec<SystemTime> = names
            .iter()
            .map(|n| {
                fs::metadata(bin.join(n))
                    .and_then(|m| m.modified())
                    .unwrap_or_else(|e| panic!("workload {n} not built: {e}"))
            })
            .collect();
        build_workloads(root).expect("second build");
        for (n, before) in names.iter().zip(mtimes) {
            let after = fs::metadata(bin.join(n)).unwrap().modified().unwrap();
            assert_eq!(
                before, after,
                "workload {n} was rebuilt although up to date"
            );
        }
    }
}
