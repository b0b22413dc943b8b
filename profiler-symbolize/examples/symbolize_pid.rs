//! Symbolize the functions of a live process's main executable and print
//! timings: `cargo run --release -p profiler-symbolize --example
//! symbolize_pid -- PID [MAX_ADDRESSES] [OUT.pb.gz]`.
//!
//! Takes every function symbol of `/proc/PID/exe` (ELF symbol table), one
//! address in the middle of each (stripped: every 64th text byte), as
//! single-frame samples; builds the
//! profile twice (cold, then from the cache) and prints stats.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use object::{Object as _, ObjectSymbol as _};
use profiler_symbolize::{write_pprof_gz, Limits, ProfileMeta, RawSample, Symbolizer};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(pid) = args.get(1).and_then(|p| p.parse::<u32>().ok()) else {
        eprintln!("usage: symbolize_pid PID [MAX_ADDRESSES] [OUT.pb.gz]");
        std::process::exit(2);
    };
    let max: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let exe = match std::fs::read_link(format!("/proc/{pid}/exe")) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: /proc/{pid}/exe: {e}");
            std::process::exit(1);
        }
    };
    let data = std::fs::read(&exe).unwrap_or_else(|e| {
        eprintln!("error: {}: {e}", exe.display());
        std::process::exit(1)
    });
    let file = object::File::parse(&*data).unwrap_or_else(|e| {
        eprintln!("error: {}: {e}", exe.display());
        std::process::exit(1)
    });
    let mut sym = Symbolizer::new(Limits::default());
    println!("RSS before: {}", rss());
    let t = Instant::now();
    if let Err(e) = sym.snapshot_process(pid) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    println!("snapshot: {:?}", t.elapsed());
    let maps = sym.process_mappings(pid);
    let mut addrs: Vec<u64> = file
        .symbols()
        .filter(|s| s.kind() == object::SymbolKind::Text && s.size() > 2)
        .filter_map(|s| {
            let v = s.address() + s.size() / 2;
            maps.iter()
                .filter(|m| Path::new(&m.path) == exe)
                .find_map(|m| m.vaddr_to_abs(v))
        })
        .collect();
    if addrs.is_empty() {
        // Stripped: every 64th byte of the executable's text mappings.
        println!("no symbol table: sampling the text every 64 bytes");
        addrs = maps
            .iter()
            .filter(|m| Path::new(&m.path) == exe)
            .flat_map(|m| (m.start..m.end).step_by(64))
            .collect();
    }
    addrs.sort_unstable();
    addrs.dedup();
    addrs.truncate(max);
    let samples: Vec<RawSample> = addrs
        .iter()
        .map(|&a| RawSample {
            tgid: pid,
            tid: pid,
            comm: "x".into(),
            user: vec![a],
            kernel: vec![],
            count: 1,
        })
        .collect();
    let meta = ProfileMeta {
        frequency_hz: 99,
        start: SystemTime::now(),
        duration: Duration::from_secs(1),
        comments: vec![],
    };
    println!("RSS with samples: {}", rss());
    let t = Instant::now();
    let p = sym.build_profile(&samples, &meta);
    let cold = t.elapsed();
    println!("RSS after cold build: {}", rss());
    println!("profile: {} bytes encoded", prost::Message::encoded_len(&p));
    let t = Instant::now();
    let _ = sym.build_profile(&samples, &meta);
    let warm = t.elapsed();
    println!("RSS after cached build: {}", rss());
    let t = Instant::now();
    let ranges = sym.process_frameless_ranges(pid);
    let fl = t.elapsed();
    let named = p.location.iter().filter(|l| !l.line.is_empty()).count();
    let inl = p.location.iter().filter(|l| l.line.len() > 1).count();
    println!(
        "{}: {} addresses, {named} symbolized, {inl} with inlined frames; cold {cold:?}, cached {warm:?}",
        exe.display(),
        addrs.len()
    );
    println!(
        "frameless ranges of the process: {} ({} bytes) in {fl:?}",
        ranges.len(),
        ranges.iter().map(|r| r.end - r.start).sum::<u64>()
    );
    println!("{:?}", sym.stats());
    println!("RSS after: {}", rss());
    if let Some(out) = args.get(3) {
        write_pprof_gz(&p, Path::new(out)).unwrap_or_else(|e| {
            eprintln!("error: {out}: {e}");
            std::process::exit(1)
        });
    }
}

fn rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .map(|s| {
            s.lines()
                .filter(|l| l.starts_with("RssAnon:") || l.starts_with("RssFile:"))
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}
