//! Integration tests of profiler-symbolize against real binaries built from
//! `tests/fixtures/` during the run (Go and C), real processes, the running
//! kernel's kallsyms, and `go tool pprof` as the reference reader.
//!
//! Tools: Go (`$GO`, else /usr/lib/go-1.23/bin/go, else `go` on PATH) and
//! `cc`. A missing tool skips the tests that need it, except under
//! `CI=true`, where it is a failure.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use object::{Object as _, ObjectSymbol as _};
use profiler_pprof::proto::Profile;
use profiler_symbolize::*;
use prost::Message as _;

// ---------------------------------------------------------------- helpers

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skip (return None) when a tool is missing, but fail under CI.
fn need<T>(what: &str, v: Option<T>) -> Option<T> {
    if v.is_none() {
        if in_ci() {
            panic!("{what} is required under CI=true but was not found");
        }
        eprintln!("SKIP: {what} not found");
    }
    v
}

fn go_tool() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("GO") {
        return Some(PathBuf::from(p));
    }
    let fixed = PathBuf::from("/usr/lib/go-1.23/bin/go");
    if fixed.exists() {
        return Some(fixed);
    }
    Command::new("go")
        .arg("version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| PathBuf::from("go"))
}

/// Scratch directory under the target dir; entries named `*-PID` left by
/// test processes that are gone are removed on first use.
fn work_dir() -> PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("profiler-symbolize-tests");
        std::fs::create_dir_all(&d).unwrap();
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let stem = name.split('.').next().unwrap_or("");
            let Some(pid) = stem.rsplit('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let p = e.path();
                let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
            }
        }
        d
    })
    .clone()
}

fn go_cmd(go: &Path) -> Command {
    let d = work_dir();
    let mut c = Command::new(go);
    c.env("GOCACHE", d.join("gocache"))
        .env("GOPATH", d.join("gopath"))
        .env("GOTOOLCHAIN", "local")
        .env("GOTELEMETRY", "off")
        .env("GOFLAGS", "-mod=mod");
    c
}

fn run(mut c: Command, what: &str) {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

struct GoFixture {
    plain: PathBuf,
    stripped: PathBuf,
    pie: PathBuf,
    pie_stripped: PathBuf,
}

impl GoFixture {
    /// Every build variant with a name; the code layout of a variant is
    /// that of its unstripped twin (`-s -w` drops only tables).
    fn variants(&self) -> [(&'static str, &Path, &Path); 4] {
        [
            ("plain", &self.plain, &self.plain),
            ("stripped", &self.stripped, &self.plain),
            ("pie", &self.pie, &self.pie),
            ("pie-stripped", &self.pie_stripped, &self.pie),
        ]
    }
}

/// The Go fixture, built once per test binary in four variants.
fn go_fixture() -> Option<&'static GoFixture> {
    static F: OnceLock<Option<GoFixture>> = OnceLock::new();
    F.get_or_init(|| {
        let go = need("go", go_tool())?;
        let out = work_dir().join(format!("go-{}", std::process::id()));
        std::fs::create_dir_all(&out).unwrap();
        let src = fixtures_dir().join("gofix/main.go");
        let build = |name: &str, flags: &[&str]| {
            let bin = out.join(name);
            let mut c = go_cmd(&go);
            c.arg("build").args(flags).arg("-o").arg(&bin).arg(&src);
            run(c, &format!("go build {flags:?}"));
            bin
        };
        Some(GoFixture {
            plain: build("gofix", &[]),
            stripped: build("gofix-stripped", &["-ldflags=-s -w"]),
            pie: build("gofix-pie", &["-buildmode=pie"]),
            pie_stripped: build("gofix-pie-stripped", &["-buildmode=pie", "-ldflags=-s -w"]),
        })
    })
    .as_ref()
}

/// The C fixture (`cc -O2 -g -fno-omit-frame-pointer`), built once.
fn c_fixture() -> Option<&'static PathBuf> {
    static F: OnceLock<Option<PathBuf>> = OnceLock::new();
    F.get_or_init(|| {
        let cc = Command::new("cc")
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success());
        need("cc", cc)?;
        let out = work_dir().join(format!("c-{}", std::process::id()));
        std::fs::create_dir_all(&out).unwrap();
        let bin = out.join("inline");
        let mut c = Command::new("cc");
        c.args(["-O2", "-g", "-fno-omit-frame-pointer", "-o"])
            .arg(&bin)
            .arg(fixtures_dir().join("inline.c"));
        run(c, "cc");
        Some(bin)
    })
    .as_ref()
}

/// `name -> (address, size)` from the ELF symbol table.
fn elf_symbols(path: &Path) -> HashMap<String, (u64, u64)> {
    let data = std::fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    file.symbols()
        .filter_map(|s| Some((s.name().ok()?.to_string(), (s.address(), s.size()))))
        .collect()
}

/// A fixture process started with `wait`, killed on drop.
struct Live(Child);

impl Live {
    fn start(bin: &Path) -> Self {
        let mut child = Command::new(bin)
            .arg("wait")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "fixture did not start");
        Live(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn kill(mut self) {
        // Kill by our own child's pid, then reap it.
        self.0.kill().unwrap();
        self.0.wait().unwrap();
        assert!(
            !Path::new(&format!("/proc/{}", self.pid())).exists() || {
                // The pid may be reused; it is not our process any more.
                true
            }
        );
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn meta() -> ProfileMeta {
    ProfileMeta {
        frequency_hz: 99,
        start: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        duration: Duration::from_secs(10),
        comments: vec!["profiler-symbolize test".into()],
    }
}

fn sample(pid: u32, user: Vec<u64>, kernel: Vec<u64>, count: u64) -> RawSample {
    RawSample {
        tgid: pid,
        tid: pid,
        comm: "fixture".into(),
        user,
        kernel,
        count,
    }
}

/// Function names of a location's lines, innermost first.
fn names(p: &Profile, loc_id: u64) -> Vec<(String, String, i64)> {
    let loc = p.location.iter().find(|l| l.id == loc_id).unwrap();
    loc.line
        .iter()
        .map(|l| {
            let f = p.function.iter().find(|f| f.id == l.function_id).unwrap();
            (
                p.string_table[f.name as usize].clone(),
                p.string_table[f.filename as usize].clone(),
                l.line,
            )
        })
        .collect()
}

fn mapping_of(p: &Profile, loc_id: u64) -> Option<&profiler_pprof::proto::Mapping> {
    let loc = p.location.iter().find(|l| l.id == loc_id).unwrap();
    p.mapping.iter().find(|m| m.id == loc.mapping_id)
}

fn abs_of(sym: &Symbolizer, pid: u32, bin: &Path, vaddr: u64) -> u64 {
    let canon = std::fs::canonicalize(bin).unwrap();
    sym.process_mappings(pid)
        .iter()
        .filter(|m| Path::new(&m.path) == canon)
        .find_map(|m| m.vaddr_to_abs(vaddr))
        .unwrap_or_else(|| panic!("{vaddr:#x} not mapped in pid {pid}"))
}

/// Run `go tool pprof -raw` and return (sum of samples/count, location text).
fn pprof_raw(file: &Path) -> Option<(i64, String)> {
    let go = need("go", go_tool())?;
    let mut c = go_cmd(&go);
    c.args(["tool", "pprof", "-raw"]).arg(file);
    let out = c.output().expect("run go tool pprof");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "go tool pprof -raw failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut total = 0;
    let mut in_samples = false;
    for line in text.lines() {
        if line.starts_with("samples/count") {
            in_samples = true;
            continue;
        }
        if line.starts_with("Locations") {
            in_samples = false;
        }
        if in_samples {
            if let Some((head, _)) = line.split_once(':') {
                let mut nums = head.split_whitespace();
                if let (Some(a), Some(_b), None) = (nums.next(), nums.next(), nums.next()) {
                    total += a.parse::<i64>().unwrap_or(0);
                }
            }
        }
    }
    Some((total, text))
}

fn decode_gz(path: &Path) -> Profile {
    let mut gz = flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap());
    let mut buf = Vec::new();
    gz.read_to_end(&mut buf).unwrap();
    Profile::decode(&*buf).unwrap()
}

// ------------------------------------------------------- frameless ranges

fn covers(ranges: &[std::ops::Range<u64>], a: u64) -> bool {
    let i = ranges.partition_point(|r| r.end <= a);
    ranges.get(i).is_some_and(|r| r.contains(&a))
}

fn covered_bytes(ranges: &[std::ops::Range<u64>], lo: u64, hi: u64) -> u64 {
    ranges
        .iter()
        .map(|r| r.end.min(hi).saturating_sub(r.start.max(lo)))
        .sum()
}

#[test]
fn frameless_ranges_of_go_cover_leaf_and_only_prologue_of_framed() {
    let Some(fx) = go_fixture() else { return };
    for (variant, bin, symbols_from) in fx.variants() {
        let syms = elf_symbols(symbols_from);
        let (leaf, leaf_size) = syms["main.leafMix"];
        let (framed, framed_size) = syms["main.framed"];
        assert!(leaf_size > 0 && framed_size > 0);
        let ranges = frameless_ranges(bin).unwrap();
        assert!(
            ranges.windows(2).all(|w| w[0].end < w[1].start),
            "{variant}: sorted and merged"
        );
        // The frameless leaf: return address at [RSP] throughout.
        assert_eq!(
            covered_bytes(&ranges, leaf, leaf + leaf_size),
            leaf_size,
            "{variant}"
        );
        // The framed function: at its entry, but not in its body.
        assert!(covers(&ranges, framed), "{variant}: entry of main.framed");
        let first = ranges.iter().find(|r| r.contains(&framed)).unwrap();
        assert!(
            first.end - framed < 24,
            "{variant}: prologue range {:#x}..{:#x} for entry {framed:#x}",
            first.start,
            first.end
        );
        let cov = covered_bytes(&ranges, framed, framed + framed_size);
        assert!(
            cov * 2 < framed_size,
            "{variant}: {cov} of {framed_size} bytes covered"
        );
        if variant.ends_with("stripped") {
            assert!(elf_symbols(bin).is_empty(), "{variant} has a symtab");
        }
        eprintln!(
            "go fixture {variant}: {} frameless ranges ({} bytes)",
            ranges.len(),
            ranges.iter().map(|r| r.end - r.start).sum::<u64>()
        );
    }
}

#[test]
fn frameless_ranges_of_c_come_from_eh_frame() {
    let Some(bin) = c_fixture() else { return };
    let syms = elf_symbols(bin);
    let ranges = frameless_ranges(bin).unwrap();
    // GCC leaves leaf functions without a frame even with
    // -fno-omit-frame-pointer (-momit-leaf-frame-pointer): all covered.
    let (compute, size) = syms["compute"];
    let cov = covered_bytes(&ranges, compute, compute + size);
    // `main` calls functions, so it pushes RBP: only entry and return.
    let (main, main_size) = syms["main"];
    assert!(covers(&ranges, main), "entry of main not covered");
    let main_cov = covered_bytes(&ranges, main, main + main_size);
    assert!(
        main_cov * 2 < main_size,
        "{main_cov} of {main_size} bytes of main covered"
    );
    // compute's last bytes may be alignment padding outside its FDE.
    assert!(
        covers(&ranges, compute) && cov + 8 >= size,
        "{cov} of {size} bytes of compute"
    );
}

#[test]
fn frameless_ranges_reject_bad_files_without_panicking() {
    let d = work_dir().join(format!("bad-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    assert!(matches!(
        frameless_ranges(&d.join("missing")),
        Err(SymbolizeError::Io { .. })
    ));
    let text = d.join("text");
    std::fs::write(&text, "not an elf").unwrap();
    assert!(matches!(
        frameless_ranges(&text),
        Err(SymbolizeError::Elf { .. })
    ));
    if let Some(fx) = go_fixture() {
        // Truncated Go binary: either a clear error or fewer ranges.
        let data = std::fs::read(&fx.plain).unwrap();
        for cut in [64usize, 4096, data.len() / 2] {
            let t = d.join(format!("trunc-{cut}"));
            std::fs::write(&t, &data[..cut]).unwrap();
            let r = frameless_ranges(&t);
            if let Err(e) = &r {
                assert!(
                    e.to_string().contains("trunc-"),
                    "error names the file: {e}"
                );
            }
        }
        // Garbage written over the pclntab and its header: no panic.
        let file = object::File::parse(&*data).unwrap();
        let sect = object::Object::section_by_name(&file, ".gopclntab").unwrap();
        let (off, len) = object::ObjectSection::file_range(&sect).unwrap();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..20usize {
            let mut bad = data.clone();
            for _ in 0..64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = off as usize + (x % len) as usize;
                bad[at] = (x >> 32) as u8;
            }
            if round % 4 == 0 {
                // Counts and offsets in the header.
                let h = off as usize + 8 + (round % 64);
                bad[h..h + 8].copy_from_slice(&x.to_le_bytes());
            }
            let t = d.join(format!("garbled-{round}"));
            std::fs::write(&t, &bad).unwrap();
            let _ = frameless_ranges(&t);
        }
    }
}

// ---------------------------------------------------------- symbolization

/// Snapshot a live Go fixture, kill it, symbolize its leaf and a caller
/// frame from the snapshot; returns the profile and the symbolizer.
fn go_profile_after_exit(bin: &Path, symbols_from: &Path) -> (Profile, Symbolizer, u64, u64) {
    let syms = elf_symbols(symbols_from);
    let (leaf, _) = syms["main.leafMix"];
    let (framed, framed_size) = syms["main.framed"];
    let live = Live::start(bin);
    let pid = live.pid();
    let mut sym = Symbolizer::new(Limits::default());
    sym.snapshot_process(pid).unwrap();
    let leaf_abs = abs_of(&sym, pid, bin, leaf + 1);
    let ret = framed + framed_size / 2;
    let ret_abs = abs_of(&sym, pid, bin, ret);
    live.kill();
    assert!(
        matches!(sym.snapshot_process(pid), Err(SymbolizeError::Proc { .. })),
        "snapshot of a dead process must fail cleanly"
    );
    let samples = vec![sample(pid, vec![leaf_abs, ret_abs, 0], vec![], 5)];
    let p = sym.build_profile(&samples, &meta());
    // The public two-step path gives the same profile.
    let (mappings, resolved) = sym.resolve_samples(&samples);
    assert_eq!(
        canonical_text(&build_profile_from_resolved(&mappings, &resolved, &meta())),
        canonical_text(&p)
    );
    (p, sym, leaf + 1, ret - 1)
}

#[test]
fn go_process_symbolizes_from_snapshot_after_exit() {
    let Some(fx) = go_fixture() else { return };
    for (variant, bin, symbols_from) in fx.variants() {
        let (p, sym, leaf_addr, caller_addr) = go_profile_after_exit(bin, symbols_from);
        assert_eq!(p.sample.len(), 1);
        let s = &p.sample[0];
        assert_eq!(s.value, vec![5, 5 * (1_000_000_000 / 99)]);
        assert_eq!(s.location_id.len(), 2, "{variant}: zero address skipped");
        let leaf_lines = names(&p, s.location_id[0]);
        assert_eq!(leaf_lines.len(), 1, "{variant}: {leaf_lines:?}");
        assert_eq!(leaf_lines[0].0, "main.leafMix", "{variant}");
        assert!(
            leaf_lines[0].1.ends_with("gofix/main.go"),
            "{variant}: {leaf_lines:?}"
        );
        assert_eq!(leaf_lines[0].2, 14, "{variant}: line of the return");
        let caller = names(&p, s.location_id[1]);
        assert_eq!(
            caller.last().unwrap().0,
            "main.framed",
            "{variant}: {caller:?}"
        );
        // Normalized (ELF) addresses, also for PIE; the caller is looked
        // up inside its call instruction.
        let loc0 = p
            .location
            .iter()
            .find(|l| l.id == s.location_id[0])
            .unwrap();
        assert_eq!(loc0.address, leaf_addr, "{variant}");
        let loc1 = p
            .location
            .iter()
            .find(|l| l.id == s.location_id[1])
            .unwrap();
        assert_eq!(loc1.address, caller_addr, "{variant}");
        let m = mapping_of(&p, loc0.id).unwrap();
        assert_eq!(
            p.string_table[m.filename as usize],
            std::fs::canonicalize(bin).unwrap().to_str().unwrap()
        );
        assert!(m.memory_start <= loc0.address && loc0.address < m.memory_limit);
        assert!(m.has_functions && m.has_line_numbers);
        // Go binaries carry no GNU build id; the mapping gets the Go build
        // ID, as `go tool buildid` prints it.
        if let Some(go) = go_tool() {
            let out = Command::new(go)
                .args(["tool", "buildid"])
                .arg(bin)
                .output()
                .unwrap();
            let want = String::from_utf8_lossy(&out.stdout).trim().to_string();
            assert!(
                !want.is_empty(),
                "{variant}: go tool buildid printed nothing"
            );
            assert_eq!(p.string_table[m.build_id as usize], want, "{variant}");
        }
        let st = sym.stats();
        assert_eq!(st.unknown_frames, 0, "{variant}: {st:?}");
        if variant.ends_with("stripped") {
            assert_eq!(st.go_pclntab_fallbacks, 2, "{variant}: {st:?}");
        } else {
            assert_eq!(st.go_pclntab_fallbacks, 0, "{variant}: DWARF used: {st:?}");
        }

        // The written file opens in go tool pprof with the same totals.
        let out = work_dir().join(format!("go-{variant}-{}.pb.gz", std::process::id()));
        write_pprof_gz(&p, &out).unwrap();
        assert_eq!(decode_gz(&out), p);
        if let Some((total, text)) = pprof_raw(&out) {
            assert_eq!(total, 5, "{text}");
            assert!(text.contains("main.leafMix"), "{text}");
        }
    }
}

/// Lines of every address of `main.framed` in a variant, by ELF address.
fn framed_lines(bin: &Path, symbols_from: &Path) -> Vec<Vec<(String, String, i64)>> {
    let (framed, size) = elf_symbols(symbols_from)["main.framed"];
    let live = Live::start(bin);
    let pid = live.pid();
    let mut sym = Symbolizer::new(Limits::default());
    sym.snapshot_process(pid).unwrap();
    let samples: Vec<RawSample> = (0..size)
        .map(|off| sample(pid, vec![abs_of(&sym, pid, bin, framed + off)], vec![], 1))
        .collect();
    live.kill();
    let p = sym.build_profile(&samples, &meta());
    p.sample
        .iter()
        .map(|s| names(&p, s.location_id[0]))
        .collect()
}

#[test]
fn go_inlined_function_is_its_own_line() {
    let Some(fx) = go_fixture() else { return };
    let mut by_variant = Vec::new();
    for (variant, bin, symbols_from) in fx.variants() {
        let lines = framed_lines(bin, symbols_from);
        let inlined: Vec<_> = lines.iter().filter(|l| l.len() == 2).collect();
        assert!(!inlined.is_empty(), "{variant}: no inlined main.scale");
        for l in inlined {
            assert_eq!(l[0].0, "main.scale", "{variant}");
            assert_eq!(l[1].0, "main.framed", "{variant}");
            assert_eq!(l[0].2, 40, "{variant}: line inside scale: {l:?}");
            assert!(l[1].2 >= 18 && l[1].2 <= 28, "{variant}: call site {l:?}");
        }
        by_variant.push((variant, lines));
    }
    // pclntab (stripped) and DWARF (plain) agree frame by frame.
    let plain = &by_variant[0].1;
    let stripped = &by_variant[1].1;
    assert_eq!(plain.len(), stripped.len());
    for (off, (d, g)) in plain.iter().zip(stripped).enumerate() {
        let dn: Vec<(&str, i64)> = d.iter().map(|l| (l.0.as_str(), l.2)).collect();
        let gn: Vec<(&str, i64)> = g.iter().map(|l| (l.0.as_str(), l.2)).collect();
        assert_eq!(dn, gn, "main.framed+{off:#x}: DWARF vs pclntab");
    }
}

#[test]
fn c_inlined_function_is_its_own_line_and_pie_addresses_normalize() {
    let Some(bin) = c_fixture() else { return };
    let (compute, size) = elf_symbols(bin)["compute"];
    let a = Live::start(bin);
    let b = Live::start(bin);
    let mut sym = Symbolizer::new(Limits::default());
    sym.snapshot_process(a.pid()).unwrap();
    sym.snapshot_process(b.pid()).unwrap();
    let mut samples = Vec::new();
    for off in 0..size {
        samples.push(sample(
            a.pid(),
            vec![abs_of(&sym, a.pid(), bin, compute + off)],
            vec![],
            1,
        ));
    }
    // The same function in a second process, very likely at another base.
    let b_abs = abs_of(&sym, b.pid(), bin, compute);
    samples.push(sample(b.pid(), vec![b_abs], vec![], 1));
    a.kill();
    b.kill();
    let p = sym.build_profile(&samples, &meta());
    assert_eq!(p.mapping.len(), 1, "one mapping per binary");
    assert_eq!(
        p.location.len() as u64,
        size,
        "both processes share locations"
    );
    let mut inlined = 0;
    for loc in &p.location {
        assert!(
            (compute..compute + size).contains(&loc.address),
            "address {:#x} not normalized to the ELF",
            loc.address
        );
        let lines = names(&p, loc.id);
        assert_eq!(lines.last().unwrap().0, "compute", "{lines:?}");
        if lines.len() == 2 {
            assert_eq!(lines[0].0, "square");
            assert!(lines[0].1.ends_with("inline.c"));
            assert!(lines[0].2 > 0 && lines[1].2 > 0);
            inlined += 1;
        }
    }
    assert!(inlined > 0, "no inlined frame found in compute");
    assert!(p.mapping[0].has_inline_frames);
    let st = sym.stats();
    assert_eq!(st.cache_misses, size, "{st:?}");

    // A second profile is served from the cache.
    let again = sym.build_profile(&samples[..1], &meta());
    assert_eq!(
        names(&again, again.sample[0].location_id[0])
            .last()
            .unwrap()
            .0,
        "compute"
    );
    assert_eq!(sym.stats().cache_hits, 1);
}

#[test]
fn kernel_frames_resolve_through_kallsyms() {
    let text = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
    let target = text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        let addr = u64::from_str_radix(it.next()?, 16).ok()?;
        let kind = it.next()?;
        let name = it.next()?;
        (addr != 0 && kind == "T" && name == "schedule").then(|| (addr, name.to_string()))
    });
    let Some((addr, name)) = target else {
        if in_ci() {
            panic!("kallsyms has no readable address for `schedule` under CI");
        }
        eprintln!("SKIP: kallsyms addresses are hidden");
        return;
    };
    let mut sym = Symbolizer::new(Limits::default());
    // A kernel-only sample of a process without snapshot, plus one
    // unmapped user frame: nothing is lost.
    let p = sym.build_profile(
        &[sample(1, vec![0x1234], vec![addr + 4, addr + 9], 2)],
        &meta(),
    );
    let s = &p.sample[0];
    assert_eq!(s.location_id.len(), 3);
    let k = names(&p, s.location_id[0]);
    assert_eq!(k[0].0, name);
    let m = mapping_of(&p, s.location_id[0]).unwrap();
    assert_eq!(p.string_table[m.filename as usize], KERNEL_MAPPING);
    let u = p
        .location
        .iter()
        .find(|l| l.id == s.location_id[2])
        .unwrap();
    assert_eq!((u.mapping_id, u.address, u.line.len()), (0, 0x1234, 0));
    assert_eq!(sym.stats().unmapped_frames, 1);
}

/// Wait until `pid` runs `name` and sleeps: during exec, `/proc/PID/exe`
/// already names the new binary while maps are still empty.
fn wait_until_sleeping(pid: u32, name: &str) {
    for _ in 0..500 {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        if exe.file_name().is_some_and(|n| n == name) && state == Some("S") {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{name} (pid {pid}) did not start sleeping");
}

// ------------------------------------------------------------- limits, errors

#[test]
fn limits_are_counted() {
    let mut sym = Symbolizer::new(Limits {
        max_processes: 1,
        max_cache_entries: 0,
        ..Limits::default()
    });
    let me = std::process::id();
    sym.snapshot_process(me).unwrap();
    sym.snapshot_process(me).unwrap(); // re-snapshot of a known pid is fine
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let r = sym.snapshot_process(child.id());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        matches!(r, Err(SymbolizeError::LimitReached { .. })),
        "{r:?}"
    );
    let f = frameless_ranges as fn(&Path) -> _;
    let addr = f as usize as u64;
    let p = sym.build_profile(&[sample(me, vec![addr], vec![], 1)], &meta());
    let st = sym.stats();
    assert_eq!(
        (st.process_overflow, st.cache_overflow, st.cache_entries),
        (1, 1, 0)
    );
    // This test binary has DWARF: our own function symbolizes.
    let lines = names(&p, p.sample[0].location_id[0]);
    assert!(
        lines.iter().any(|l| l.0.contains("frameless_ranges")),
        "{lines:?}"
    );
    assert!(matches!(
        sym.snapshot_process(u32::MAX),
        Err(SymbolizeError::Proc { .. })
    ));
}

// ------------------------------------------------------ reference output

fn reference_input() -> (Vec<MappingDesc>, Vec<ResolvedSample>) {
    let mappings = vec![
        MappingDesc {
            path: "/usr/local/bin/controller".into(),
            build_id: "0123abcd".into(),
            memory_start: 0x401000,
            memory_limit: 0x900000,
            file_offset: 0x1000,
        },
        MappingDesc {
            path: KERNEL_MAPPING.into(),
            build_id: String::new(),
            memory_start: 0xffff_ffff_8100_0000,
            memory_limit: 0xffff_ffff_8200_0000,
            file_offset: 0,
        },
    ];
    let line = |f: &str, file: &str, line: i64| FrameLine {
        function: f.into(),
        system_name: f.into(),
        file: file.into(),
        line,
        column: 0,
    };
    let frame = |m: Option<usize>, a: u64, lines: Vec<FrameLine>| ResolvedFrame {
        mapping: m,
        address: a,
        lines,
    };
    let kernel = frame(
        Some(1),
        0xffff_ffff_8100_1234,
        vec![line("do_syscall_64", "", 0)],
    );
    let inlined = frame(
        Some(0),
        0x402000,
        vec![
            line("main.hash", "/src/main.go", 12),
            line("main.reconcile", "/src/main.go", 40),
        ],
    );
    let main_fn = frame(
        Some(0),
        0x403000,
        vec![line("main.main", "/src/main.go", 60)],
    );
    let rust = FrameLine {
        function: "core::ptr::drop_in_place".into(),
        system_name: "_ZN4core3ptr13drop_in_place17h0123456789abcdefE".into(),
        file: String::new(),
        line: 0,
        column: 0,
    };
    let unknown = frame(Some(0), 0x404000, vec![]);
    let unmapped = frame(None, 0x7f00_0000_1000, vec![]);
    let samples = vec![
        ResolvedSample {
            frames: vec![kernel.clone(), inlined.clone(), main_fn.clone()],
            pid: 42,
            thread: "controller".into(),
            count: 3,
        },
        ResolvedSample {
            frames: vec![inlined.clone(), main_fn.clone()],
            pid: 42,
            thread: "worker".into(),
            count: 2,
        },
        // Same stack and labels as the first: merged.
        ResolvedSample {
            frames: vec![kernel, inlined, main_fn.clone()],
            pid: 42,
            thread: "controller".into(),
            count: 4,
        },
        ResolvedSample {
            frames: vec![
                unknown,
                unmapped,
                frame(Some(0), 0x405000, vec![rust]),
                main_fn,
            ],
            pid: 7,
            thread: "gc".into(),
            count: 1,
        },
    ];
    (mappings, samples)
}

#[test]
fn reference_profile_matches_basic_txt() {
    let (mappings, samples) = reference_input();
    let p = build_profile_from_resolved(&mappings, &samples, &meta());
    assert_eq!(p.sample.len(), 3, "identical samples merged");
    let text = canonical_text(&p);
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/pprof/basic.txt");
    if std::env::var("PROFILER_BLESS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, &text).unwrap();
    }
    let want = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with PROFILER_BLESS=1 to create)",
            file.display()
        )
    });
    assert_eq!(text, want, "canonical text differs from {}", file.display());

    // Round trip through the file format keeps the canonical text.
    let out = work_dir().join(format!("basic-{}.pb.gz", std::process::id()));
    write_pprof_gz(&p, &out).unwrap();
    assert_eq!(canonical_text(&decode_gz(&out)), text);
    if let Some((total, raw)) = pprof_raw(&out) {
        assert_eq!(total, 10, "{raw}");
        assert!(raw.contains("main.hash"), "{raw}");
    }
}

#[test]
fn canonical_text_ignores_id_order() {
    let (mappings, mut samples) = reference_input();
    let a = canonical_text(&build_profile_from_resolved(&mappings, &samples, &meta()));
    samples.reverse();
    let b = canonical_text(&build_profile_from_resolved(&mappings, &samples, &meta()));
    assert_eq!(a, b);
}

// ------------------------------------------------- long-running behaviour

#[test]
fn prune_releases_binaries_of_forgotten_processes() {
    let Some(bin) = c_fixture() else { return };
    let (compute, _) = elf_symbols(bin)["compute"];
    let live = Live::start(bin);
    let pid = live.pid();
    let mut sym = Symbolizer::new(Limits::default());
    sym.snapshot_process(pid).unwrap();
    let abs = abs_of(&sym, pid, bin, compute);
    live.kill();
    sym.build_profile(&[sample(pid, vec![abs], vec![], 1)], &meta());
    let before = sym.stats();
    assert!(before.binaries >= 1 && before.open_files >= 1 && before.cache_entries == 1);
    assert_eq!(sym.prune(), 0, "still referenced by the snapshot");
    sym.forget_process(pid);
    assert_eq!(sym.prune(), before.binaries);
    let after = sym.stats();
    assert_eq!(
        (
            after.binaries,
            after.open_files,
            after.cache_entries,
            after.processes
        ),
        (0, 0, 0, 0)
    );
    // Slots are reused and symbolization still works afterwards.
    let live = Live::start(bin);
    sym.snapshot_process(live.pid()).unwrap();
    let abs = abs_of(&sym, live.pid(), bin, compute);
    let p = sym.build_profile(&[sample(live.pid(), vec![abs], vec![], 1)], &meta());
    assert_eq!(names(&p, p.sample[0].location_id[0])[0].0, "compute");
    assert_eq!(sym.stats().binaries, before.binaries);
}

/// Symbolizes many functions of this (DWARF-rich) test binary, printing
/// the time taken cold and from the cache.
#[test]
fn symbolizes_thousands_of_own_functions() {
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    let me = std::process::id();
    let mut sym = Symbolizer::new(Limits::default());
    sym.snapshot_process(me).unwrap();
    let maps = sym.process_mappings(me);
    let mut addrs: Vec<u64> = elf_symbols(&exe)
        .values()
        .filter(|(a, size)| *a != 0 && *size > 4)
        .filter_map(|(a, size)| {
            maps.iter()
                .filter(|m| Path::new(&m.path) == exe)
                .find_map(|m| m.vaddr_to_abs(a + size / 2))
        })
        .collect();
    addrs.sort_unstable();
    addrs.dedup();
    addrs.truncate(20_000);
    assert!(addrs.len() > 1000, "only {} functions", addrs.len());
    let samples: Vec<RawSample> = addrs
        .iter()
        .map(|&a| sample(me, vec![a], vec![], 1))
        .collect();
    let t = std::time::Instant::now();
    let p = sym.build_profile(&samples, &meta());
    let cold = t.elapsed();
    let t = std::time::Instant::now();
    let p2 = sym.build_profile(&samples, &meta());
    let warm = t.elapsed();
    assert_eq!(p, p2);
    let named = p.location.iter().filter(|l| !l.line.is_empty()).count();
    assert!(
        named * 100 >= addrs.len() * 95,
        "{named} of {} symbolized",
        addrs.len()
    );
    let st = sym.stats();
    assert_eq!(st.cache_hits, addrs.len() as u64);
    eprintln!(
        "symbolized {} addresses of {}: cold {:?}, cached {:?}; {} inline frames",
        addrs.len(),
        exe.display(),
        cold,
        warm,
        p.location.iter().filter(|l| l.line.len() > 1).count()
    );
}

#[test]
fn process_frameless_ranges_translate_pie_addresses() {
    let Some(fx) = go_fixture() else { return };
    let (leaf, leaf_size) = elf_symbols(&fx.pie)["main.leafMix"];
    let live = Live::start(&fx.pie);
    let pid = live.pid();
    let mut sym = Symbolizer::new(Limits::default());
    sym.snapshot_process(pid).unwrap();
    let abs = abs_of(&sym, pid, &fx.pie, leaf);
    live.kill();
    assert_ne!(abs, leaf, "PIE loaded at its link address");
    let ranges = sym.process_frameless_ranges(pid);
    assert_eq!(covered_bytes(&ranges, abs, abs + leaf_size), leaf_size);
    assert!(!covers(&ranges, leaf), "untranslated ELF address present");
    assert_eq!(sym.stats().frameless_errors, 0);
    assert!(sym.process_frameless_ranges(u32::MAX).is_empty());
}

#[test]
fn vdso_frames_resolve() {
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id();
    wait_until_sleeping(pid, "sleep");
    let mut sym = Symbolizer::new(Limits::default());
    let r = sym.snapshot_process(pid);
    child.kill().unwrap();
    child.wait().unwrap();
    r.unwrap();
    let Some(vdso) = sym
        .process_mappings(pid)
        .into_iter()
        .find(|m| m.path == "[vdso]")
    else {
        panic!(
            "no [vdso] mapping in a snapshot of sleep: {:?} {:?}",
            sym.process_mappings(pid),
            sym.stats()
        );
    };
    let samples: Vec<RawSample> = (vdso.start..vdso.end)
        .step_by(8)
        .map(|a| sample(pid, vec![a], vec![], 1))
        .collect();
    let p = sym.build_profile(&samples, &meta());
    let names: Vec<String> = p
        .location
        .iter()
        .flat_map(|l| names(&p, l.id))
        .map(|l| l.0)
        .collect();
    assert!(
        names.iter().any(|n| n.contains("clock_gettime")),
        "{names:?}"
    );
    assert!(p
        .mapping
        .iter()
        .any(|m| p.string_table[m.filename as usize] == "[vdso]"));
}

#[test]
fn zombie_snapshot_keeps_earlier_mappings() {
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id();
    wait_until_sleeping(pid, "sleep");
    let mut sym = Symbolizer::new(Limits::default());
    sym.snapshot_process(pid).unwrap();
    let before = sym.process_mappings(pid);
    assert!(!before.is_empty());
    child.kill().unwrap();
    // Not reaped yet: a zombie, whose maps file is empty.
    for _ in 0..500 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            == Some("Z")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = sym.snapshot_process(pid);
    child.wait().unwrap();
    r.unwrap();
    assert_eq!(sym.process_mappings(pid), before);
    assert_eq!(sym.stats().empty_snapshots, 1);
    assert!(matches!(
        sym.snapshot_process(pid),
        Err(SymbolizeError::Proc { .. })
    ));
    assert_eq!(
        sym.process_mappings(pid),
        before,
        "failed snapshot keeps it"
    );
}

#[test]
fn go_functions_match_the_symbol_table_also_when_stripped() {
    let Some(fx) = go_fixture() else { return };
    for (variant, bin, symbols_from) in fx.variants() {
        let syms = elf_symbols(symbols_from);
        let funcs = go_functions(bin).unwrap().expect("a Go binary");
        assert!(
            funcs.windows(2).all(|w| w[0].entry <= w[1].entry),
            "{variant}: sorted"
        );
        for name in [
            "main.leafMix",
            "main.framed",
            "main.main",
            "runtime.newproc",
        ] {
            let (addr, size) = syms[name];
            let f = funcs
                .iter()
                .find(|f| f.name == name)
                .unwrap_or_else(|| panic!("{variant}: {name} missing"));
            assert_eq!(f.entry, addr, "{variant}: {name}");
            assert!(f.end >= addr + size, "{variant}: {name} end");
        }
    }
    let Some(c) = c_fixture() else { return };
    assert!(
        go_functions(c).unwrap().is_none(),
        "C binary has no pclntab"
    );
}
