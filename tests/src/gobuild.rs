//! Build a Go workload from `tests/workloads/` with a given Go toolchain
//! (`/usr/lib/go-1.NN`, Debian's packages, installed by `cargo xtask
//! setup`), plain or stripped (`-ldflags=-s -w`), into `target/gobuild/`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::root;

/// The Go versions the version-matrix tests build with.
pub const GO_VERSIONS: &[&str] = &["1.19", "1.21", "1.22", "1.23"];

/// The `go` tool of Go `version` (`"1.22"`), if installed.
pub fn go_tool(version: &str) -> Option<PathBuf> {
    let p = PathBuf::from(format!("/usr/lib/go-{version}/bin/go"));
    p.exists().then_some(p)
}

/// Build `./<package>` of the workloads module with Go `version`
/// (stripped with `-s -w` when `stripped`). `None` when that Go is not
/// installed (a skip, except under `CI=true`, where it panics); panics when
/// the build fails.
pub fn build(package: &str, version: &str, stripped: bool) -> Option<PathBuf> {
    let Some(go) = go_tool(version) else {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "Go {version} missing at /usr/lib/go-{version}: run `cargo xtask setup`"
        );
        eprintln!("Go {version} missing at /usr/lib/go-{version}: skipped");
        return None;
    };
    let tag = if stripped { "-stripped" } else { "" };
    let out = root().join(format!("target/gobuild/{package}-go{version}{tag}"));
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let mut cmd = Command::new(&go);
    cmd.current_dir(root().join("tests/workloads"))
        .env("GOCACHE", root().join(format!("target/gocache-{version}")))
        .env("GOPATH", root().join("target/gopath"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("CGO_ENABLED", "0")
        .arg("build")
        .arg("-o")
        .arg(&out);
    if stripped {
        cmd.arg("-ldflags=-s -w");
    }
    let st = cmd
        .arg(format!("./{package}"))
        .status()
        .expect("running go build");
    assert!(st.success(), "go {version} build ./{package} failed");
    Some(out)
}

/// True when `bin` has no `.symtab` (a stripped build).
pub fn is_stripped(bin: &Path) -> bool {
    let data = std::fs::read(bin).unwrap();
    !data.windows(8).any(|w| w == b".symtab\0")
}
