//! The heap profile's globals found in the runtime's code (how stripped
//! binaries are read) are the ones `.symtab` names, on every supported Go
//! version. Builds `tests/workloads/heapsites` with each installed Go; no
//! root needed. `cargo test -p profiler-user --test heap_addrs`.

use std::{path::PathBuf, process::Command};

use profiler_user::go::{binary::GoBinary, heap};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn code_derived_heap_addresses_equal_the_symbol_table() {
    let mut checked = 0;
    for v in ["1.19", "1.21", "1.22", "1.23"] {
        let go = PathBuf::from(format!("/usr/lib/go-{v}/bin/go"));
        if !go.exists() {
            assert!(
                !std::env::var("CI").is_ok_and(|c| c == "true"),
                "Go {v} missing"
            );
            eprintln!("Go {v} missing: skipped");
            continue;
        }
        let out = root().join(format!("target/heap-addr-tests/heapsites-{v}"));
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let st = Command::new(&go)
            .current_dir(root().join("tests/workloads"))
            .env("GOCACHE", root().join(format!("target/gocache-heap-{v}")))
            .env("GOFLAGS", "-mod=mod")
            .env("GOTOOLCHAIN", "local")
            .env("GOPROXY", "off")
            .env("CGO_ENABLED", "0")
            .args(["build", "-o"])
            .arg(&out)
            .arg("./heapsites")
            .status()
            .expect("go build");
        assert!(st.success(), "go build with Go {v}");
        let bin = GoBinary::open(&out).unwrap();
        let sym = heap::heap_addrs(&bin).expect("symtab addresses");
        assert_eq!(sym.source, "symtab");
        let code = heap::heap_addrs_in_code(&bin).expect("code addresses");
        assert_eq!(code.mbuckets, sym.mbuckets, "Go {v}: runtime.mbuckets");
        assert_eq!(code.cycle, sym.cycle, "Go {v}: runtime.mProfCycle");
        assert_eq!(code.rate, sym.rate, "Go {v}: runtime.MemProfileRate");
        assert!(code.cycle.is_some() && code.rate.is_some());
        checked += 1;
    }
    eprintln!("{checked} Go versions checked");
}
