//! `profdiff`: compare pprof profiles and gate on budgets.
fn main() {
    eprintln!("profdiff: not yet implemented");
    std::process::exit(2);
}
